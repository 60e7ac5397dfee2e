// JSON values as schemas see them: type names, exact numbers, equality and hashing, bounded quoting.
#include "core/json_schema/values.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

namespace keyway::core::json_schema {

namespace {

std::string formatDouble(double d) {
  if (std::isfinite(d) && std::floor(d) == d && std::fabs(d) < 1e15) {
    return std::to_string(static_cast<long long>(d));
  }
  char buf[40];
  // %.17g round-trips; try shorter forms first so 0.1 prints as 0.1, not 0.10000000000000001.
  for (int prec = 6; prec <= 17; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*g", prec, d);
    if (std::strtod(buf, nullptr) == d) break;
  }
  return buf;
}

std::uint64_t hashBytes(const char* s, std::size_t n) {
  std::uint64_t h = 1469598103934665603ULL;  // FNV-1a
  for (std::size_t i = 0; i < n; ++i) {
    h ^= static_cast<unsigned char>(s[i]);
    h *= 1099511628211ULL;
  }
  return h;
}

}  // namespace

const char* instanceTypeName(const Value& v) {
  switch (v.GetType()) {
    case rapidjson::kNullType: return "null";
    case rapidjson::kFalseType:
    case rapidjson::kTrueType: return "boolean";
    case rapidjson::kObjectType: return "object";
    case rapidjson::kArrayType: return "array";
    case rapidjson::kStringType: return "string";
    case rapidjson::kNumberType: return isIntegralNumber(v) ? "integer" : "number";
  }
  return "value";
}


std::string typeList(std::uint8_t mask) {
  static const std::pair<std::uint8_t, const char*> kOrder[] = {
      {kTObject, "object"}, {kTArray, "array"},     {kTString, "string"}, {kTInteger, "integer"},
      {kTNumber, "number"}, {kTBoolean, "boolean"}, {kTNull, "null"}};
  if (mask & kTNumber) mask = static_cast<std::uint8_t>(mask & ~kTInteger);
  std::vector<const char*> names;
  for (const auto& [bit, name] : kOrder) {
    if (mask & bit) names.push_back(name);
  }
  std::string out;
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += (i + 1 == names.size()) ? " or " : ", ";
    out += names[i];
  }
  return out;
}

int compareNum(const Num& a, const Num& b) {
  if (a.kind != Num::kDouble && b.kind != Num::kDouble) {
    if (a.kind == Num::kInt && b.kind == Num::kInt) return a.i < b.i ? -1 : (a.i > b.i ? 1 : 0);
    if (a.kind == Num::kUint && b.kind == Num::kUint) return a.u < b.u ? -1 : (a.u > b.u ? 1 : 0);
    if (a.kind == Num::kInt) {  // b is a uint64 above INT64_MAX
      if (a.i < 0) return -1;
      const auto au = static_cast<std::uint64_t>(a.i);
      return au < b.u ? -1 : (au > b.u ? 1 : 0);
    }
    if (b.i < 0) return 1;
    const auto bu = static_cast<std::uint64_t>(b.i);
    return a.u < bu ? -1 : (a.u > bu ? 1 : 0);
  }
  if (a.kind == Num::kDouble && b.kind == Num::kDouble) return a.d < b.d ? -1 : (a.d > b.d ? 1 : 0);
  if (b.kind == Num::kDouble) return -compareNum(b, a);
  // A double against an exact integer, without rounding the integer to a double (2^64 - 1 and
  // 2^64 are the same double).
  const double d = a.d;
  const double fl = std::floor(d);
  if (b.kind == Num::kUint) {
    if (d < 0) return -1;
    if (d >= 18446744073709551616.0) return 1;
    const auto t = static_cast<std::uint64_t>(fl);
    if (t != b.u) return t < b.u ? -1 : 1;
  } else {
    if (d < -9223372036854775808.0) return -1;
    if (d >= 9223372036854775808.0) return 1;
    const auto t = static_cast<std::int64_t>(fl);
    if (t != b.i) return t < b.i ? -1 : 1;
  }
  return d > fl ? 1 : 0;
}

std::string formatNum(const Num& n) {
  switch (n.kind) {
    case Num::kInt: return std::to_string(n.i);
    case Num::kUint: return std::to_string(n.u);
    case Num::kDouble: break;
  }
  return formatDouble(n.d);
}

bool isMultipleOf(const Num& x, const Num& m) {
  if (x.kind != Num::kDouble && m.kind != Num::kDouble) {
    const std::uint64_t ax =
        x.kind == Num::kInt ? (x.i < 0 ? 0 - static_cast<std::uint64_t>(x.i) : static_cast<std::uint64_t>(x.i)) : x.u;
    const std::uint64_t am = m.kind == Num::kInt ? static_cast<std::uint64_t>(m.i) : m.u;
    return am != 0 && ax % am == 0;
  }
  const double q = x.asDouble() / m.asDouble();
  if (!std::isfinite(q)) return false;
  const double r = std::nearbyint(q);
  // Decimal divisors (0.01) are not exact in binary: accept a quotient within rounding error of an
  // integer, with a tolerance that grows with the quotient's own precision.
  const double tolerance = std::max(1e-9, std::fabs(q) * 4 * std::numeric_limits<double>::epsilon());
  return std::fabs(q - r) <= tolerance;
}

std::optional<std::uint64_t> nonNegativeInteger(const Value& v) {
  if (!v.IsNumber()) return std::nullopt;
  if (v.IsUint64()) return v.GetUint64();
  if (v.IsInt64()) return std::nullopt;  // negative
  const double d = v.GetDouble();
  if (!std::isfinite(d) || d < 0 || std::floor(d) != d) return std::nullopt;
  if (d >= 18446744073709551615.0) return std::numeric_limits<std::uint64_t>::max();
  return static_cast<std::uint64_t>(d);
}

void renderValue(const Value& v, std::string* out, int depth) {
  if (out->size() > kMaxQuotedChars) return;
  switch (v.GetType()) {
    case rapidjson::kNullType: out->append("null"); return;
    case rapidjson::kFalseType: out->append("false"); return;
    case rapidjson::kTrueType: out->append("true"); return;
    case rapidjson::kNumberType: out->append(formatNum(Num::of(v))); return;
    case rapidjson::kStringType: {
      out->push_back('"');
      const char* s = v.GetString();
      for (SizeType i = 0; i < v.GetStringLength() && out->size() <= kMaxQuotedChars + 40; ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c == '"' || c == '\\') {
          out->push_back('\\');
          out->push_back(static_cast<char>(c));
        } else if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out->append(buf);
        } else {
          out->push_back(static_cast<char>(c));
        }
      }
      out->push_back('"');
      return;
    }
    case rapidjson::kArrayType: {
      if (depth >= 4) {
        out->append("[...]");
        return;
      }
      out->push_back('[');
      for (SizeType i = 0; i < v.Size(); ++i) {
        if (i > 0) out->append(", ");
        if (out->size() > kMaxQuotedChars) {
          out->append("...");
          break;
        }
        renderValue(v[i], out, depth + 1);
      }
      out->push_back(']');
      return;
    }
    case rapidjson::kObjectType: {
      if (depth >= 4) {
        out->append("{...}");
        return;
      }
      out->push_back('{');
      bool first = true;
      for (auto m = v.MemberBegin(); m != v.MemberEnd(); ++m) {
        if (!first) out->append(", ");
        first = false;
        if (out->size() > kMaxQuotedChars) {
          out->append("...");
          break;
        }
        renderValue(m->name, out, depth + 1);
        out->append(": ");
        renderValue(m->value, out, depth + 1);
      }
      out->push_back('}');
      return;
    }
  }
}

std::string quote(const Value& v) {
  std::string out;
  renderValue(v, &out, 0);
  return out;
}

std::string quote(std::string_view s) {
  Value tmp(rapidjson::StringRef(s.data(), static_cast<SizeType>(s.size())));
  return quote(tmp);
}

bool deeperThan(const Value& v, std::size_t limit) {
  std::vector<std::pair<const Value*, std::size_t>> stack{{&v, 1}};
  while (!stack.empty()) {
    auto [cur, depth] = stack.back();
    stack.pop_back();
    if (depth > limit) return true;
    if (cur->IsArray()) {
      for (const auto& e : cur->GetArray()) stack.push_back({&e, depth + 1});
    } else if (cur->IsObject()) {
      for (auto m = cur->MemberBegin(); m != cur->MemberEnd(); ++m) stack.push_back({&m->value, depth + 1});
    }
  }
  return false;
}

std::uint64_t hashValue(const Value& v, int depth, std::uint64_t* steps) {
  ++*steps;
  switch (v.GetType()) {
    case rapidjson::kNullType: return 0x9e3779b97f4a7c15ULL;
    case rapidjson::kFalseType: return 0x51ed270b27a5c0ffULL;
    case rapidjson::kTrueType: return 0x2545f4914f6cdd1dULL;
    case rapidjson::kNumberType: {
      // Integral values hash by exact sign and magnitude (1 and 1.0 alike, and distinct integers
      // near 2^64 apart); other doubles by their bits.
      const Num n = Num::of(v);
      bool negative = false;
      std::uint64_t magnitude = 0;
      if (n.kind == Num::kInt) {
        negative = n.i < 0;
        magnitude = negative ? 0 - static_cast<std::uint64_t>(n.i) : static_cast<std::uint64_t>(n.i);
      } else if (n.kind == Num::kUint) {
        magnitude = n.u;
      } else if (std::floor(n.d) == n.d && std::fabs(n.d) < 18446744073709551616.0) {
        negative = n.d < 0;
        magnitude = static_cast<std::uint64_t>(std::fabs(n.d));
      } else {
        std::uint64_t bits = 0;
        std::memcpy(&bits, &n.d, sizeof bits);
        return bits * 0xff51afd7ed558ccdULL;
      }
      return (magnitude ^ (negative && magnitude != 0 ? 0x8000000000000001ULL : 0)) * 0xc4ceb9fe1a85ec53ULL + 0x1234567;
    }
    case rapidjson::kStringType: return hashBytes(v.GetString(), v.GetStringLength());
    case rapidjson::kArrayType: {
      std::uint64_t h = 0xabcdef12345ULL + v.Size();
      if (depth < 16) {
        for (const auto& e : v.GetArray()) h = (h * 1099511628211ULL) ^ hashValue(e, depth + 1, steps);
      }
      return h;
    }
    case rapidjson::kObjectType: {
      std::uint64_t h = 0x123456789abULL + v.MemberCount();
      if (depth < 16) {
        for (auto m = v.MemberBegin(); m != v.MemberEnd(); ++m) {  // order-insensitive sum
          h += (hashBytes(m->name.GetString(), m->name.GetStringLength()) * 31) ^ hashValue(m->value, depth + 1, steps);
        }
      }
      return h;
    }
  }
  return 0;
}

bool scalarEqual(const Value& a, const Value& b) {
  if (a.IsNumber() && b.IsNumber()) return compareNum(Num::of(a), Num::of(b)) == 0;
  if (a.GetType() != b.GetType()) return false;
  if (a.IsString()) {
    return a.GetStringLength() == b.GetStringLength() &&
           std::memcmp(a.GetString(), b.GetString(), a.GetStringLength()) == 0;
  }
  return true;  // null, true, false
}

}  // namespace keyway::core::json_schema
