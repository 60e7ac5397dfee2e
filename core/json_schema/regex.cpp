// ECMA-262 regular expressions translated to RE2 syntax, so a hostile "pattern" cannot hang keyway.
#include "core/json_schema/regex.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <exception>

#include "core/json_schema/uri.hpp"

namespace keyway::core::json_schema {

namespace {

// ECMA-262's \s (white space and line terminators) as the body of an RE2 character class.
constexpr const char* kEcmaSpaceBody =
    "\\t\\n\\v\\f\\r \\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}\\x{feff}";

bool readHex(std::string_view p, std::size_t i, std::size_t n, std::uint32_t* out) {
  if (i + n > p.size()) return false;
  std::uint32_t v = 0;
  for (std::size_t k = 0; k < n; ++k) {
    const int h = hexValue(p[i + k]);
    if (h < 0) return false;
    v = v * 16 + static_cast<std::uint32_t>(h);
  }
  *out = v;
  return true;
}

std::string codePointEscape(std::uint32_t cp) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "\\x{%x}", cp);
  return buf;
}

// Translates one escape sequence starting at p[i] == '\\'. Advances *i past it.
bool translateEscape(std::string_view p, std::size_t* i, bool in_class, std::string* out, std::string* why) {
  if (*i + 1 >= p.size()) {
    *why = "trailing backslash";
    return false;
  }
  const char c = p[*i + 1];
  *i += 2;
  switch (c) {
    case 'd':
    case 'D':
    case 'w':
    case 'W':
    case 'n':
    case 'r':
    case 't':
    case 'f':
    case 'v':
      out->push_back('\\');
      out->push_back(c);
      return true;
    case 'b':
    case 'B':
      if (in_class) {
        if (c == 'B') {
          *why = "\\B inside a character class";
          return false;
        }
        out->append("\\x08");  // [\b] is backspace in ECMA-262
      } else {
        out->push_back('\\');
        out->push_back(c);
      }
      return true;
    case 's':
      if (in_class) {
        out->append(kEcmaSpaceBody);
      } else {
        out->append("[").append(kEcmaSpaceBody).append("]");
      }
      return true;
    case 'S':
      // Inside a class RE2 cannot nest a negated class: its ASCII \S is the closest.
      if (in_class) {
        out->append("\\S");
      } else {
        out->append("[^").append(kEcmaSpaceBody).append("]");
      }
      return true;
    case '0':
      if (*i < p.size() && p[*i] >= '0' && p[*i] <= '9') {
        *why = "octal escapes are not supported";
        return false;
      }
      out->append("\\x00");
      return true;
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
    case '7':
    case '8':
    case '9': *why = "backreferences are not supported (RE2)"; return false;
    case 'k': *why = "named backreferences are not supported (RE2)"; return false;
    case 'x': {
      std::uint32_t v = 0;
      if (!readHex(p, *i, 2, &v)) {
        *why = "invalid \\x escape";
        return false;
      }
      *i += 2;
      out->append(codePointEscape(v));
      return true;
    }
    case 'u': {
      std::uint32_t v = 0;
      if (*i < p.size() && p[*i] == '{') {
        const std::size_t close = p.find('}', *i);
        if (close == std::string_view::npos || close == *i + 1 || close - *i - 1 > 6 ||
            !readHex(p, *i + 1, close - *i - 1, &v) || v > 0x10FFFF) {
          *why = "invalid \\u{...} escape";
          return false;
        }
        *i = close + 1;
      } else {
        if (!readHex(p, *i, 4, &v)) {
          *why = "invalid \\u escape";
          return false;
        }
        *i += 4;
        if (v >= 0xD800 && v <= 0xDBFF) {  // surrogate pair written as two escapes
          std::uint32_t lo = 0;
          if (*i + 6 <= p.size() && p[*i] == '\\' && p[*i + 1] == 'u' && readHex(p, *i + 2, 4, &lo) && lo >= 0xDC00 &&
              lo <= 0xDFFF) {
            v = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00);
            *i += 6;
          } else {
            *why = "lone surrogate escape";
            return false;
          }
        } else if (v >= 0xDC00 && v <= 0xDFFF) {
          *why = "lone surrogate escape";
          return false;
        }
      }
      out->append(codePointEscape(v));
      return true;
    }
    case 'c': {
      if (*i < p.size() && std::isalpha(static_cast<unsigned char>(p[*i]))) {
        out->append(codePointEscape(static_cast<std::uint32_t>(p[*i]) % 32));
        *i += 1;
        return true;
      }
      *why = "invalid \\c escape";
      return false;
    }
    case 'p':
    case 'P': {
      if (*i >= p.size() || p[*i] != '{') {
        *why = "invalid \\p escape";
        return false;
      }
      const std::size_t close = p.find('}', *i);
      if (close == std::string_view::npos) {
        *why = "invalid \\p escape";
        return false;
      }
      out->push_back('\\');
      out->push_back(c);
      out->append(p.substr(*i, close - *i + 1));
      *i = close + 1;
      return true;
    }
    default: break;
  }
  if (std::strchr("^$\\.*+?()[]{}|/-", c) != nullptr && c != '\0') {
    out->push_back('\\');
    out->push_back(c);
    return true;
  }
  *why = std::string("invalid escape \\") + c;
  return false;
}

// A quantifier "{n}", "{n,}", "{n,m}" at p[i]; returns its length or 0.
std::size_t quantifierLength(std::string_view p, std::size_t i, bool* too_big) {
  std::size_t k = i + 1;
  auto digits = [&](std::uint64_t* value) {
    const std::size_t start = k;
    *value = 0;
    while (k < p.size() && p[k] >= '0' && p[k] <= '9') {
      *value = std::min<std::uint64_t>(*value * 10 + static_cast<std::uint64_t>(p[k] - '0'), 100000);
      ++k;
    }
    return k > start;
  };
  std::uint64_t lo = 0;
  std::uint64_t hi = 0;
  if (!digits(&lo)) return 0;
  if (k < p.size() && p[k] == ',') {
    ++k;
    digits(&hi);
  }
  if (k >= p.size() || p[k] != '}') return 0;
  *too_big = lo > 1000 || hi > 1000;  // RE2's repetition limit
  return k - i + 1;
}

bool translateEcma(std::string_view p, std::string* out, std::string* why) {
  out->clear();
  out->reserve(p.size() + 16);
  std::size_t i = 0;
  while (i < p.size()) {
    const char c = p[i];
    if (c == '\\') {
      if (!translateEscape(p, &i, false, out, why)) return false;
      continue;
    }
    if (c == '(') {
      if (i + 1 < p.size() && p[i + 1] == '?') {
        if (i + 2 < p.size() && p[i + 2] == ':') {
          out->append("(?:");
          i += 3;
          continue;
        }
        if (i + 2 < p.size() && (p[i + 2] == '=' || p[i + 2] == '!')) {
          *why = "lookahead is not supported (RE2)";
          return false;
        }
        if (i + 3 < p.size() && p[i + 2] == '<' && (p[i + 3] == '=' || p[i + 3] == '!')) {
          *why = "lookbehind is not supported (RE2)";
          return false;
        }
        if (i + 2 < p.size() && p[i + 2] == '<') {
          const std::size_t close = p.find('>', i + 3);
          if (close == std::string_view::npos) {
            *why = "unterminated group name";
            return false;
          }
          out->append("(?P<").append(p.substr(i + 3, close - i - 3)).append(">");
          i = close + 1;
          continue;
        }
        *why = "unsupported group syntax (?";
        return false;
      }
      out->push_back('(');
      ++i;
      continue;
    }
    if (c == '.') {
      out->append("[^\\n\\r\\x{2028}\\x{2029}]");
      ++i;
      continue;
    }
    if (c == '[') {
      ++i;
      bool negate = false;
      if (i < p.size() && p[i] == '^') {
        negate = true;
        ++i;
      }
      if (i < p.size() && p[i] == ']') {  // ECMA "[]" matches nothing, "[^]" matches anything
        out->append(negate ? "[\\x{0}-\\x{10ffff}]" : "[^\\x{0}-\\x{10ffff}]");
        ++i;
        continue;
      }
      out->append(negate ? "[^" : "[");
      bool closed = false;
      while (i < p.size()) {
        const char d = p[i];
        if (d == ']') {
          closed = true;
          ++i;
          break;
        }
        if (d == '\\') {
          if (!translateEscape(p, &i, true, out, why)) return false;
          continue;
        }
        if (d == '[') {
          out->append("\\[");  // RE2 would read "[:alpha:]" as a POSIX class
        } else {
          out->push_back(d);
        }
        ++i;
      }
      if (!closed) {
        *why = "unterminated character class";
        return false;
      }
      out->push_back(']');
      continue;
    }
    if (c == '{') {
      bool too_big = false;
      const std::size_t len = quantifierLength(p, i, &too_big);
      if (len == 0) {
        out->append("\\{");
        ++i;
        continue;
      }
      if (too_big) {
        *why = "repetition counts above 1000 are not supported (RE2)";
        return false;
      }
      out->append(p.substr(i, len));
      i += len;
      continue;
    }
    if (c == '}' || c == ']') {
      out->push_back('\\');
      out->push_back(c);
      ++i;
      continue;
    }
    out->push_back(c);
    ++i;
  }
  return true;
}

std::unique_ptr<RE2> makeRe2(const std::string& pattern, std::int64_t max_mem, std::string* why) {
  try {
    RE2::Options options;
    options.set_log_errors(false);
    options.set_max_mem(max_mem);
    options.set_encoding(RE2::Options::EncodingUTF8);
    auto re = std::make_unique<RE2>(pattern, options);
    if (!re->ok()) {
      *why = re->error();
      return nullptr;
    }
    return re;
  } catch (const std::exception& e) {  // RE2 reports errors by status; only allocation may throw
    *why = e.what();
    return nullptr;
  }
}

// The index of the first `target` ('|' or ')') at group depth 0, scanning from p[from] and
// skipping escapes and character classes; npos if none. From an opening '(' with target ')', that
// is the parenthesis closing the group.
std::size_t findAtDepthZero(std::string_view p, std::size_t from, char target) {
  int depth = 0;
  for (std::size_t i = from; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\') {
      ++i;
    } else if (c == '[') {
      ++i;
      if (i < p.size() && p[i] == '^') ++i;
      if (i < p.size() && p[i] == ']') continue;  // "[]" / "[^]"
      while (i < p.size() && p[i] != ']') {
        if (p[i] == '\\') ++i;
        ++i;
      }
    } else if (c == '(') {
      ++depth;
    } else if (c == ')') {
      if (--depth == 0 && target == ')') return i;
    } else if (c == target && depth == 0) {
      return i;
    }
  }
  return std::string_view::npos;
}

}  // namespace

std::unique_ptr<Pattern> compilePattern(std::string_view source, std::int64_t max_mem, std::string* why) {
  auto pattern = std::make_unique<Pattern>();
  pattern->source = std::string(source);
  std::string_view rest = source;
  if (!rest.empty() && rest[0] == '^') {
    std::size_t pos = 1;
    while (rest.substr(pos, 3) == "(?=" || rest.substr(pos, 3) == "(?!") {
      const std::size_t close = findAtDepthZero(rest, pos, ')');
      if (close == std::string_view::npos) {
        *why = "unbalanced parenthesis";
        return nullptr;
      }
      const bool must_match = rest[pos + 2] == '=';
      std::string translated;
      if (!translateEcma(rest.substr(pos + 3, close - pos - 3), &translated, why)) return nullptr;
      auto re = makeRe2("^(?:" + translated + ")", max_mem, why);
      if (!re) return nullptr;
      pattern->conditions.emplace_back(std::move(re), must_match);
      pos = close + 1;
    }
    if (!pattern->conditions.empty()) {
      if (findAtDepthZero(rest.substr(pos), 0, '|') != std::string_view::npos) {
        *why = "lookahead is not supported (RE2)";
        return nullptr;
      }
      std::string translated;
      if (!translateEcma(rest.substr(pos), &translated, why)) return nullptr;
      pattern->main = makeRe2("^" + translated, max_mem, why);
      if (!pattern->main) return nullptr;
      return pattern;
    }
  }
  std::string translated;
  if (!translateEcma(source, &translated, why)) return nullptr;
  pattern->main = makeRe2(translated, max_mem, why);
  if (!pattern->main) return nullptr;
  return pattern;
}

}  // namespace keyway::core::json_schema

namespace keyway::core {

std::shared_ptr<const json_schema::Pattern> PatternCache::get(std::string_view source, std::string* why) {
  const std::string key(source);
  const auto it = entries_.find(key);
  if (it != entries_.end()) {
    *why = it->second.second;
    return it->second.first;
  }
  std::shared_ptr<const json_schema::Pattern> pattern =
      json_schema::compilePattern(source, json_schema::kRe2MaxMem, why);
  entries_.emplace(key, std::make_pair(pattern, pattern ? std::string() : *why));
  return pattern;
}

std::shared_ptr<PatternCache> makePatternCache() {
  return std::make_shared<PatternCache>();
}

}  // namespace keyway::core
