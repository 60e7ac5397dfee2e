// libFuzzer target: JSON Schema compile + validate (core/json_schema) on a schema and an instance from one input.
//
// Input: <schema JSON> "\n----\n" <instance JSON>; without the separator the whole input is used as
// both. Beyond "no crash, no hang, no leak" it checks invariants: isValid() agrees with validate(),
// every pointer is empty or starts with '/', the violation bound holds, and every violation has a reason.
#include <rapidjson/document.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "core/json_schema.hpp"

namespace {

void fail(const char* what) {
  std::fprintf(stderr, "schema_validate_fuzz: invariant broken: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace keyway::core;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  constexpr std::string_view kSeparator = "\n----\n";
  const std::size_t split = input.find(kSeparator);
  const std::string_view schema_text = split == std::string_view::npos ? input : input.substr(0, split);
  const std::string_view instance_text =
      split == std::string_view::npos ? input : input.substr(split + kSeparator.size());

  rapidjson::Document schema_doc;
  if (!parseJsonText(schema_text, &schema_doc).ok()) return 0;
  // Vary the options with the input so every mode gets exercised.
  SchemaCompileOptions options;
  options.dialect = size % 3 == 0 ? SchemaDialect::kDraft4 : SchemaDialect::kAuto;
  options.unenforced = size % 2 == 0 ? UnenforcedPolicy::kReject : UnenforcedPolicy::kReport;
  if (size % 5 == 0) options.pattern_cache = makePatternCache();
  std::vector<SchemaIssue> issues;
  auto compiled = compileSchema(schema_doc, options, &issues);
  for (const auto& issue : issues) {
    if (issue.message.empty()) fail("empty issue message");
  }
  if (!compiled.ok()) {
    if (schema_doc.IsObject() || schema_doc.IsBool()) fail("an object/boolean schema failed to compile");
    return 0;
  }
  if ((*compiled)->issues().size() != issues.size()) fail("issues() differs from the reported list");

  rapidjson::Document instance;
  if (!parseJsonText(instance_text, &instance).ok()) return 0;
  const auto violations = validate(**compiled, instance);
  const bool valid = isValid(**compiled, instance);
  if (valid != violations.empty()) fail("isValid() disagrees with validate()");
  if (violations.size() > kMaxSchemaViolations) fail("more violations than the bound");
  for (const auto& v : violations) {
    if (v.reason.empty()) fail("violation without a reason");
    if (!v.pointer.empty() && v.pointer[0] != '/') fail("pointer does not start with '/'");
  }
  const auto few = validate(**compiled, instance, 2);
  if (few.size() > 2 || few.empty() != violations.empty()) fail("bounded validate() disagrees");
  return 0;
}
