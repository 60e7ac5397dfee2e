// Internal to core/json_schema/ (its .cpp files only): the "format" values keyway checks, and their reasons.
#pragma once

#include <rapidjson/document.h>

#include <cstdint>
#include <string_view>

namespace keyway::core::json_schema {

// What a "format" checks; several names share one check (uuid4 and uuid, ipv4network and ipvanyinterface).
enum class Format : std::uint8_t {
  kNone,
  kDateTime,
  kDate,
  kTime,
  kDuration,
  kEmail,
  kUuid,
  kUri,
  kUriReference,
  kHostname,
  kIpv4,
  kIpv6,
  kIpAny,
  kIpInterface,
  kRegex,
  kBinary,
  kPassword,
  kBase64,
  kBase64Url,
  kJsonString,
  kJsonPointer,
  kInt32,
  kInt64,
  kFloat,
};

// One "format" name keyway knows; `message` is the violation's reason ("" when nothing is checked).
struct FormatInfo {
  const char* name;
  Format format;
  const char* message;
};

// The format called `name`, or null when keyway does not check it (then an issue).
const FormatInfo* findFormat(std::string_view name);

// True when `s` is valid in format `f` (formats with no string constraint accept anything).
bool checkStringFormat(Format f, std::string_view s);
// True when the number `v` is valid in format `f` (int32/int64 ranges; other formats accept it).
bool checkNumberFormat(Format f, const rapidjson::Value& v);

}  // namespace keyway::core::json_schema
