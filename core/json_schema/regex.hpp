// Internal to core/json_schema/ (its .cpp files only): "pattern" regexes, ECMA-262 syntax run by RE2.
#pragma once

#include <re2/re2.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/json_schema.hpp"

namespace keyway::core::json_schema {

// Memory one compiled "pattern" may take in RE2.
inline constexpr std::int64_t kRe2MaxMem = 4 << 20;

// A compiled "pattern": RE2 program plus the leading lookaheads RE2 lacks. Pydantic emits
// "^(?!^[-+.]*$)[+-]?0*\d*\.?\d*$" for Decimal; a lookahead right after a leading "^" only tests
// the whole string from its start, so it is exactly a second anchored match (or non-match).
struct Pattern {
  std::string source;
  std::unique_ptr<RE2> main;
  std::vector<std::pair<std::unique_ptr<RE2>, bool>> conditions;  // (regex, must_match)

  bool matches(std::string_view s) const {
    const re2::StringPiece text(s.data(), s.size());
    for (const auto& [re, must_match] : conditions) {
      if (RE2::PartialMatch(text, *re) != must_match) return false;
    }
    return RE2::PartialMatch(text, *main);
  }
};

// Translates and compiles an ECMA-262 pattern; null with `why` set when RE2 cannot run it
// (backreferences, lookaround other than leading lookaheads, repetition above 1000, ...).
std::unique_ptr<Pattern> compilePattern(std::string_view source, std::int64_t max_mem, std::string* why);

}  // namespace keyway::core::json_schema

namespace keyway::core {

// Declared in core/json_schema.hpp; one pattern text compiles once per cache.
class PatternCache {
 public:
  // The compiled pattern, or null with `why` set; failures are remembered too.
  std::shared_ptr<const json_schema::Pattern> get(std::string_view source, std::string* why);

 private:
  std::unordered_map<std::string, std::pair<std::shared_ptr<const json_schema::Pattern>, std::string>> entries_;
};

}  // namespace keyway::core
