// Internal to core/json_schema/ (its .cpp files only): JSON value semantics shared by compiler and validator.
// Type bits, exact numbers, equality and hashing, and schema values quoted in reasons.
#pragma once

#include <rapidjson/document.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace keyway::core::json_schema {

using rapidjson::SizeType;
using rapidjson::Value;

// Schema values quoted in a reason are cut short near this many characters.
inline constexpr std::size_t kMaxQuotedChars = 160;

// The JSON Schema "type" names as bits, so a "type" list is one mask.
enum TypeBit : std::uint8_t {
  kTNull = 1,
  kTBoolean = 2,
  kTObject = 4,
  kTArray = 8,
  kTNumber = 16,
  kTString = 32,
  kTInteger = 64,
};
inline constexpr std::uint8_t kAllTypes = 0x7f;

inline bool isIntegralNumber(const Value& v) {
  if (v.IsInt64() || v.IsUint64()) return true;
  const double d = v.GetDouble();
  return std::isfinite(d) && std::floor(d) == d;
}

// The type bits an instance satisfies: an integral number (1 or 1.0) is both "number" and "integer".
inline std::uint8_t instanceTypes(const Value& v) {
  switch (v.GetType()) {
    case rapidjson::kNullType: return kTNull;
    case rapidjson::kFalseType:
    case rapidjson::kTrueType: return kTBoolean;
    case rapidjson::kObjectType: return kTObject;
    case rapidjson::kArrayType: return kTArray;
    case rapidjson::kStringType: return kTString;
    case rapidjson::kNumberType: return isIntegralNumber(v) ? (kTNumber | kTInteger) : kTNumber;
  }
  return 0;
}

// "null", "boolean", "object", "array", "string", "integer" or "number": for "got ..." in reasons.
const char* instanceTypeName(const Value& v);

// "string", "string or null", "object, array or null". "integer" is dropped when "number" is there.
std::string typeList(std::uint8_t mask);

// A JSON number kept exactly when it is an integer (int64/uint64), so bounds like
// 18446744073709551615 compare correctly.
struct Num {
  enum Kind : std::uint8_t { kInt, kUint, kDouble };
  Kind kind = kDouble;
  std::int64_t i = 0;
  std::uint64_t u = 0;
  double d = 0;

  static Num of(const Value& v) {
    Num n;
    if (v.IsInt64()) {
      n.kind = kInt;
      n.i = v.GetInt64();
    } else if (v.IsUint64()) {
      n.kind = kUint;
      n.u = v.GetUint64();
    } else {
      n.kind = kDouble;
      n.d = v.GetDouble();
    }
    return n;
  }
  double asDouble() const {
    switch (kind) {
      case kInt: return static_cast<double>(i);
      case kUint: return static_cast<double>(u);
      case kDouble: break;
    }
    return d;
  }
  bool positive() const {
    switch (kind) {
      case kInt: return i > 0;
      case kUint: return u > 0;
      case kDouble: break;
    }
    return d > 0;
  }
};

// -1, 0 or 1, exactly, whatever the mix of integer and double operands.
int compareNum(const Num& a, const Num& b);
// The shortest text that reads back as the same number (0.1, not 0.10000000000000001).
std::string formatNum(const Num& n);
// Decimal divisors (0.01) are accepted within rounding error, as a user means them.
bool isMultipleOf(const Num& x, const Num& m);
// Reads a non-negative integer keyword value (5 or 5.0).
std::optional<std::uint64_t> nonNegativeInteger(const Value& v);

// Appends a JSON rendering of a schema value, bounded in depth and length (for reasons).
void renderValue(const Value& v, std::string* out, int depth);
// renderValue() of the whole value, as a string.
std::string quote(const Value& v);
std::string quote(std::string_view s);

// True when `v` nests deeper than `limit` (iterative: the value may be arbitrarily deep).
bool deeperThan(const Value& v, std::size_t limit);

// Equal values (in the JSON Schema sense: 1 == 1.0, member order irrelevant) hash equal. Below a
// fixed depth only the shape is hashed, which keeps this recursion bounded. Adds the values it
// visited to *steps, for the caller's evaluation budget.
std::uint64_t hashValue(const Value& v, int depth, std::uint64_t* steps);

// Equality of two values when `a` is not an array or object (1 == 1.0).
bool scalarEqual(const Value& a, const Value& b);

}  // namespace keyway::core::json_schema
