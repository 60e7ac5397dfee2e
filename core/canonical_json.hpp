// Canonical JSON text for cache keys: two request bodies that mean the same to the upstream get
// the same bytes, whatever their key order, whitespace or escaping.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "core/result.hpp"

namespace keyway::core {

// Nesting deeper than this is refused (kBadRequest). It bounds recursion on hostile input and
// the cost of re-ordering nested objects (each level copies its members' text once, so the work
// is O(size * object depth)). Real action bodies nest a handful of levels.
inline constexpr size_t kMaxCanonicalJsonDepth = 128;

// Parses `json` (RFC 8259, UTF-8; one value, optional surrounding whitespace) and serialises it
// canonically:
//  - no insignificant whitespace;
//  - object members sorted by the UTF-8 bytes of their decoded names; members with the same name
//    keep their relative order (a stable sort), because Python's json keeps the LAST duplicate,
//    so {"a":1,"a":2} and {"a":2,"a":1} really are different requests;
//  - strings decoded and re-escaped minimally: only '"', '\\' and control characters below 0x20
//    are escaped (\b \f \n \r \t, else \u00xx); everything else is raw UTF-8. A lone UTF-16
//    surrogate escape (which Python accepts) is kept as a lowercase \udxxx escape;
//  - numbers: integers (no fraction, no exponent) keep their exact digits, except "-0" -> "0"
//    (Python parses both to int 0, and integers are arbitrary precision there, so no other
//    rewrite is safe). Numbers with a fraction or exponent are floats to the upstream (Python
//    float = IEEE double): they are rewritten to the shortest text that round-trips to the same
//    double, always with a '.' or an exponent so they stay floats: 1.0, 1e0, 10e-1 and 1.00 all
//    become "1.0". Integers and floats are never merged (1 vs 1.0): pydantic and the upstream may
//    treat int and float differently. A float that overflows a double (1e400) keeps its text.
// Errors (kBadRequest, with the byte offset): invalid JSON, invalid UTF-8, trailing garbage,
// nesting deeper than kMaxCanonicalJsonDepth. Pure function; thread-safe; never throws.
Result<std::string> canonicalJson(std::string_view json);

}  // namespace keyway::core
