// Internal to core/json_schema/ (its .cpp files only): every keyword keyway knows, and what kind it is.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace keyway::core::json_schema {

// Subschemas nested deeper than this (through subschema keywords) are not compiled, nor scanned for
// ids: hostile nesting costs neither stack nor time.
inline constexpr std::size_t kMaxSchemaNesting = 128;

// One value per enforced keyword (spellings of one keyword share it: $defs and definitions); the last
// three are the kinds of keywords keyway does not enforce: identification (refs.cpp reads it),
// annotations, and keywords known but unsupported (an issue).
enum class Keyword : std::uint8_t {
  kType,
  kEnum,
  kConst,
  kMultipleOf,
  kMaximum,
  kExclusiveMaximum,
  kMinimum,
  kExclusiveMinimum,
  kMaxLength,
  kMinLength,
  kPattern,
  kFormat,
  kItems,
  kPrefixItems,
  kAdditionalItems,
  kMaxItems,
  kMinItems,
  kUniqueItems,
  kContains,
  kMinContains,
  kMaxContains,
  kMaxProperties,
  kMinProperties,
  kRequired,
  kProperties,
  kPatternProperties,
  kAdditionalProperties,
  kPropertyNames,
  kDependencies,
  kDependentRequired,
  kDependentSchemas,
  kAllOf,
  kAnyOf,
  kOneOf,
  kNot,
  kIf,
  kThen,
  kElse,
  kRef,
  kNullable,
  kDefinitions,
  kStructural,
  kAnnotation,
  kUnsupported,
};

// The keyword called `name`; nullopt for a name keyway does not know (an issue, unless "x-...").
std::optional<Keyword> keywordNamed(std::string_view name);

}  // namespace keyway::core::json_schema
