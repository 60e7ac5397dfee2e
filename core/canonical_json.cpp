// Canonical JSON serialisation (sorted keys, minimal escaping, normalised floats) for cache keys.
#include "core/canonical_json.hpp"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <system_error>
#include <utility>
#include <vector>

#include "core/text.hpp"

namespace keyway::core {
namespace {

// A small recursive-descent parser that writes canonical text as it goes. Hand-written rather
// than RapidJSON so that number texts and lone surrogates are under our control (RapidJSON
// would turn 1.0 and 1 into different types but lose the integer digits beyond 64 bits).
class Canonicalizer {
 public:
  explicit Canonicalizer(std::string_view in) : in_(in) {}

  Result<std::string> run() {
    std::string out;
    out.reserve(in_.size());
    skipWs();
    if (!value(out, 0)) return fail();
    skipWs();
    if (pos_ != in_.size()) {
      error_ = "unexpected data after the JSON value";
      return fail();
    }
    return out;
  }

 private:
  Error fail() const {
    return Error::make(ErrorCode::kBadRequest,
                       "invalid JSON at byte " + std::to_string(pos_) + ": " + error_);
  }

  bool setError(const char* message) {
    if (error_.empty()) error_ = message;
    return false;
  }

  void skipWs() {
    while (pos_ < in_.size()) {
      const char c = in_[pos_];
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
      ++pos_;
    }
  }

  bool literal(std::string_view word, std::string& out) {
    if (in_.substr(pos_, word.size()) != word) return setError("invalid literal");
    pos_ += word.size();
    out += word;
    return true;
  }

  bool value(std::string& out, size_t depth) {
    if (pos_ >= in_.size()) return setError("unexpected end of input");
    switch (in_[pos_]) {
      case '{':
        return object(out, depth + 1);
      case '[':
        return array(out, depth + 1);
      case '"': {
        std::string decoded;
        if (!string(decoded)) return false;
        emitString(decoded, out);
        return true;
      }
      case 't':
        return literal("true", out);
      case 'f':
        return literal("false", out);
      case 'n':
        return literal("null", out);
      default:
        return number(out);
    }
  }

  bool object(std::string& out, size_t depth) {
    if (depth > kMaxCanonicalJsonDepth) return setError("nesting too deep");
    ++pos_;  // '{'
    // Members are canonicalised into their own buffers, then emitted in sorted order.
    std::vector<std::pair<std::string, std::string>> members;
    skipWs();
    if (pos_ < in_.size() && in_[pos_] == '}') {
      ++pos_;
      out += "{}";
      return true;
    }
    while (true) {
      skipWs();
      if (pos_ >= in_.size() || in_[pos_] != '"') return setError("expected a member name");
      std::string name;
      if (!string(name)) return false;
      skipWs();
      if (pos_ >= in_.size() || in_[pos_] != ':') return setError("expected ':'");
      ++pos_;
      skipWs();
      std::string text;
      if (!value(text, depth)) return false;
      members.emplace_back(std::move(name), std::move(text));
      skipWs();
      if (pos_ >= in_.size()) return setError("unterminated object");
      if (in_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (in_[pos_] == '}') {
        ++pos_;
        break;
      }
      return setError("expected ',' or '}'");
    }
    // std::string compares as unsigned bytes (char_traits<char>::compare uses memcmp), which
    // for UTF-8 is code point order. Stable: duplicate names keep their order (see header).
    std::stable_sort(members.begin(), members.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    out += '{';
    bool first = true;
    for (const auto& member : members) {
      if (!first) out += ',';
      first = false;
      emitString(member.first, out);
      out += ':';
      out += member.second;
    }
    out += '}';
    return true;
  }

  bool array(std::string& out, size_t depth) {
    if (depth > kMaxCanonicalJsonDepth) return setError("nesting too deep");
    ++pos_;  // '['
    out += '[';
    skipWs();
    if (pos_ < in_.size() && in_[pos_] == ']') {
      ++pos_;
      out += ']';
      return true;
    }
    bool first = true;
    while (true) {
      skipWs();
      if (!first) out += ',';
      first = false;
      if (!value(out, depth)) return false;
      skipWs();
      if (pos_ >= in_.size()) return setError("unterminated array");
      if (in_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (in_[pos_] == ']') {
        ++pos_;
        out += ']';
        return true;
      }
      return setError("expected ',' or ']'");
    }
  }

  bool number(std::string& out) {
    const size_t start = pos_;
    if (pos_ < in_.size() && in_[pos_] == '-') ++pos_;
    if (pos_ >= in_.size() || !isDigit(in_[pos_])) return setError("invalid value");
    if (in_[pos_] == '0') {
      ++pos_;
    } else {
      while (pos_ < in_.size() && isDigit(in_[pos_])) ++pos_;
    }
    bool is_float = false;
    if (pos_ < in_.size() && in_[pos_] == '.') {
      is_float = true;
      ++pos_;
      if (pos_ >= in_.size() || !isDigit(in_[pos_])) return setError("digit expected after '.'");
      while (pos_ < in_.size() && isDigit(in_[pos_])) ++pos_;
    }
    if (pos_ < in_.size() && (in_[pos_] == 'e' || in_[pos_] == 'E')) {
      is_float = true;
      ++pos_;
      if (pos_ < in_.size() && (in_[pos_] == '+' || in_[pos_] == '-')) ++pos_;
      if (pos_ >= in_.size() || !isDigit(in_[pos_])) return setError("digit expected in exponent");
      while (pos_ < in_.size() && isDigit(in_[pos_])) ++pos_;
    }
    const std::string_view text = in_.substr(start, pos_ - start);
    if (!is_float) {
      out += (text == "-0") ? std::string_view("0") : text;
      return true;
    }
    double d = 0;
    const auto parsed = std::from_chars(text.data(), text.data() + text.size(), d);
    if (parsed.ec != std::errc() || parsed.ptr != text.data() + text.size()) {
      // Out of double range: keep the text (never merge two values we cannot prove equal).
      out += text;
      return true;
    }
    char buf[64];
    const auto printed = std::to_chars(buf, buf + sizeof(buf), d);
    if (printed.ec != std::errc()) {
      out += text;
      return true;
    }
    const std::string_view shortest(buf, static_cast<size_t>(printed.ptr - buf));
    out += shortest;
    if (shortest.find_first_of(".e") == std::string_view::npos) out += ".0";
    return true;
  }

  bool hex4(uint32_t& cp) {
    if (in_.size() - pos_ < 4) return setError("truncated \\u escape");
    cp = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = in_[pos_++];
      cp <<= 4;
      if (c >= '0' && c <= '9') {
        cp |= static_cast<uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        cp |= static_cast<uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        cp |= static_cast<uint32_t>(c - 'A' + 10);
      } else {
        return setError("invalid \\u escape");
      }
    }
    return true;
  }

  // Appends code point `cp` as UTF-8. Surrogates (only lone ones reach here) are written in the
  // 3-byte generalised form (WTF-8: ED A0..BF xx), which valid UTF-8 input can never contain, so
  // emitString() can tell them apart and re-escape them.
  static void appendUtf8(uint32_t cp, std::string& out) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  // Length of the valid UTF-8 sequence starting at `pos` (RFC 3629: no overlongs, no encoded
  // surrogates, nothing above U+10FFFF), or 0.
  size_t utf8Length(size_t pos) const {
    const auto byte = [&](size_t i) { return static_cast<unsigned char>(in_[i]); };
    const unsigned char c = byte(pos);
    size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return 0;
    }
    if (in_.size() - pos < len) return 0;
    if (byte(pos + 1) < lo || byte(pos + 1) > hi) return 0;
    for (size_t i = 2; i < len; ++i) {
      if (byte(pos + i) < 0x80 || byte(pos + i) > 0xBF) return 0;
    }
    return len;
  }

  // Decodes the string at pos_ (which is at '"') into `decoded`.
  bool string(std::string& decoded) {
    ++pos_;  // opening quote
    while (true) {
      if (pos_ >= in_.size()) return setError("unterminated string");
      const unsigned char c = static_cast<unsigned char>(in_[pos_]);
      if (c == '"') {
        ++pos_;
        return true;
      }
      if (c < 0x20) return setError("control character in string");
      if (c == '\\') {
        ++pos_;
        if (pos_ >= in_.size()) return setError("unterminated escape");
        const char e = in_[pos_++];
        switch (e) {
          case '"': decoded += '"'; break;
          case '\\': decoded += '\\'; break;
          case '/': decoded += '/'; break;
          case 'b': decoded += '\b'; break;
          case 'f': decoded += '\f'; break;
          case 'n': decoded += '\n'; break;
          case 'r': decoded += '\r'; break;
          case 't': decoded += '\t'; break;
          case 'u': {
            uint32_t cp = 0;
            if (!hex4(cp)) return false;
            if (cp >= 0xD800 && cp <= 0xDBFF && in_.size() - pos_ >= 6 && in_[pos_] == '\\' &&
                in_[pos_ + 1] == 'u') {
              const size_t save = pos_;
              pos_ += 2;
              uint32_t low = 0;
              if (!hex4(low)) return false;
              if (low >= 0xDC00 && low <= 0xDFFF) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
              } else {
                pos_ = save;  // a lone high surrogate followed by another escape
              }
            }
            appendUtf8(cp, decoded);
            break;
          }
          default:
            return setError("invalid escape");
        }
        continue;
      }
      if (c < 0x80) {
        decoded += static_cast<char>(c);
        ++pos_;
        continue;
      }
      const size_t len = utf8Length(pos_);
      if (len == 0) return setError("invalid UTF-8");
      decoded.append(in_.substr(pos_, len));
      pos_ += len;
    }
  }

  static void emitString(std::string_view s, std::string& out) {
    out += '"';
    for (size_t i = 0; i < s.size(); ++i) {
      const unsigned char c = static_cast<unsigned char>(s[i]);
      switch (c) {
        case '"': out += "\\\""; continue;
        case '\\': out += "\\\\"; continue;
        case '\b': out += "\\b"; continue;
        case '\f': out += "\\f"; continue;
        case '\n': out += "\\n"; continue;
        case '\r': out += "\\r"; continue;
        case '\t': out += "\\t"; continue;
        default: break;
      }
      if (c < 0x20) {
        out += "\\u00";
        appendHexByte(out, c);
      } else if (c == 0xED && i + 2 < s.size() && static_cast<unsigned char>(s[i + 1]) >= 0xA0) {
        // A lone surrogate in WTF-8 form (see appendUtf8): re-escape it.
        const uint32_t cp = ((c & 0x0Fu) << 12) |
                            ((static_cast<unsigned char>(s[i + 1]) & 0x3Fu) << 6) |
                            (static_cast<unsigned char>(s[i + 2]) & 0x3Fu);
        out += "\\u";
        appendHexByte(out, static_cast<unsigned char>(cp >> 8));
        appendHexByte(out, static_cast<unsigned char>(cp & 0xFF));
        i += 2;
      } else {
        out += static_cast<char>(c);
      }
    }
    out += '"';
  }

  std::string_view in_;
  size_t pos_ = 0;
  std::string error_;
};

}  // namespace

Result<std::string> canonicalJson(std::string_view json) {
  return Canonicalizer(json).run();
}

}  // namespace keyway::core
