// The table from keyword names to their kinds: enforced, structural, annotation, or known but unsupported.
#include "core/json_schema/keywords.hpp"

#include <unordered_map>

namespace keyway::core::json_schema {

namespace {

const std::unordered_map<std::string_view, Keyword>& keywordTable() {
  static const std::unordered_map<std::string_view, Keyword> table = {
      {"type", Keyword::kType},
      {"enum", Keyword::kEnum},
      {"const", Keyword::kConst},
      {"multipleOf", Keyword::kMultipleOf},
      {"maximum", Keyword::kMaximum},
      {"exclusiveMaximum", Keyword::kExclusiveMaximum},
      {"minimum", Keyword::kMinimum},
      {"exclusiveMinimum", Keyword::kExclusiveMinimum},
      {"maxLength", Keyword::kMaxLength},
      {"minLength", Keyword::kMinLength},
      {"pattern", Keyword::kPattern},
      {"format", Keyword::kFormat},
      {"items", Keyword::kItems},
      {"prefixItems", Keyword::kPrefixItems},
      {"additionalItems", Keyword::kAdditionalItems},
      {"maxItems", Keyword::kMaxItems},
      {"minItems", Keyword::kMinItems},
      {"uniqueItems", Keyword::kUniqueItems},
      {"contains", Keyword::kContains},
      {"minContains", Keyword::kMinContains},
      {"maxContains", Keyword::kMaxContains},
      {"maxProperties", Keyword::kMaxProperties},
      {"minProperties", Keyword::kMinProperties},
      {"required", Keyword::kRequired},
      {"properties", Keyword::kProperties},
      {"patternProperties", Keyword::kPatternProperties},
      {"additionalProperties", Keyword::kAdditionalProperties},
      {"propertyNames", Keyword::kPropertyNames},
      {"dependencies", Keyword::kDependencies},
      {"dependentRequired", Keyword::kDependentRequired},
      {"dependentSchemas", Keyword::kDependentSchemas},
      {"allOf", Keyword::kAllOf},
      {"anyOf", Keyword::kAnyOf},
      {"oneOf", Keyword::kOneOf},
      {"not", Keyword::kNot},
      {"if", Keyword::kIf},
      {"then", Keyword::kThen},
      {"else", Keyword::kElse},
      {"$ref", Keyword::kRef},
      {"nullable", Keyword::kNullable},
      {"$defs", Keyword::kDefinitions},
      {"definitions", Keyword::kDefinitions},
      // Identification: handled by the id index, nothing to check.
      {"$id", Keyword::kStructural},
      {"id", Keyword::kStructural},
      {"$schema", Keyword::kStructural},
      {"$anchor", Keyword::kStructural},
      {"$dynamicAnchor", Keyword::kStructural},
      {"$recursiveAnchor", Keyword::kStructural},
      {"$vocabulary", Keyword::kStructural},
      // Annotations: no effect on validity.
      {"title", Keyword::kAnnotation},
      {"description", Keyword::kAnnotation},
      {"default", Keyword::kAnnotation},
      {"examples", Keyword::kAnnotation},
      {"example", Keyword::kAnnotation},
      {"$comment", Keyword::kAnnotation},
      {"readOnly", Keyword::kAnnotation},
      {"writeOnly", Keyword::kAnnotation},
      {"deprecated", Keyword::kAnnotation},
      {"discriminator", Keyword::kAnnotation},
      {"contentMediaType", Keyword::kAnnotation},
      {"contentEncoding", Keyword::kAnnotation},
      {"contentSchema", Keyword::kAnnotation},
      {"externalDocs", Keyword::kAnnotation},
      {"xml", Keyword::kAnnotation},
      // Known but not enforced by keyway: reported.
      {"$dynamicRef", Keyword::kUnsupported},
      {"$recursiveRef", Keyword::kUnsupported},
      {"unevaluatedProperties", Keyword::kUnsupported},
      {"unevaluatedItems", Keyword::kUnsupported},
  };
  return table;
}

}  // namespace

std::optional<Keyword> keywordNamed(std::string_view name) {
  const auto it = keywordTable().find(name);
  if (it == keywordTable().end()) return std::nullopt;
  return it->second;
}

}  // namespace keyway::core::json_schema
