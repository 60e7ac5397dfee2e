// Single-thread throughput of BOSA body validation (core/json_schema): validations per second, machine-parsable.
//
// Usage: validate_bench [--seconds S]   (default 2 s per measurement)
// Prints one line per measurement:  validate_bench <case> <per_second>
//   <schema>.validate        validate() on an already parsed body (what the gateway adds per call
//                            once it has parsed the body anyway)
//   <schema>.parse_validate  parseJsonText() of the body bytes + validate()
// Exit status 1 if a benchmark body does not validate (the numbers would be meaningless).
#include <rapidjson/document.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/json_schema.hpp"

namespace {

using keyway::core::CompiledSchema;

// pydantic 2 model_json_schema() of a list_pull_requests request (owner, repo, state enum,
// per_page bounds, Optional page, Optional list of fields, Optional nested filter via $defs).
constexpr const char* kListPullRequestsSchema = R"({"$defs": {"Filter": {"properties": {"label": {"title": "Label",
  "type": "string"}, "since": {"format": "date-time", "title": "Since", "type": "string"}}, "title": "Filter", "type":
  "object"}}, "properties": {"owner": {"maxLength": 100, "minLength": 1, "title": "Owner", "type": "string"}, "repo":
  {"pattern": "^[A-Za-z0-9_.-]+$", "title": "Repo", "type": "string"}, "state": {"default": "open", "enum": ["open",
  "closed", "all"], "title": "State", "type": "string"}, "per_page": {"default": 30, "maximum": 100, "minimum": 1,
  "title": "Per Page", "type": "integer"}, "page": {"anyOf": [{"minimum": 1, "type": "integer"}, {"type": "null"}],
  "default": null, "title": "Page"}, "response_fields": {"anyOf": [{"items": {"type": "string"}, "type": "array"},
  {"type": "null"}], "default": null, "title": "Response Fields"}, "filter": {"anyOf": [{"$ref": "#/$defs/Filter"},
  {"type": "null"}], "default": null}}, "required": ["owner", "repo"], "title": "ListPullRequestsRequest", "type":
  "object"})";

constexpr const char* kListPullRequestsBody =
    R"({"owner":"octocat","repo":"hello-world","state":"open","per_page":50,"page":2,"response_fields":["number","title"]})";

// A 30-field request with nested models ($defs), lists of models, enums, formats and bounds.
constexpr const char* kNested30Schema = R"({"$defs": {
  "Address": {"type": "object", "properties": {"street": {"type": "string", "minLength": 1}, "city": {"type": "string"},
    "zip": {"type": "string", "pattern": "^[0-9]{5}$"}, "country": {"enum": ["US", "CA", "MX", "ID"], "type": "string"}},
    "required": ["street", "city"]},
  "Item": {"type": "object", "properties": {"sku": {"type": "string", "maxLength": 32}, "qty": {"type": "integer",
    "minimum": 1, "maximum": 1000}, "price": {"type": "number", "exclusiveMinimum": 0}, "tags": {"type": "array",
    "items": {"type": "string"}, "maxItems": 10}}, "required": ["sku", "qty"]}},
  "type": "object", "properties": {
  "f01": {"type": "string", "minLength": 1, "maxLength": 200}, "f02": {"type": "string", "format": "email"},
  "f03": {"type": "string", "format": "date-time"}, "f04": {"type": "integer", "minimum": 0},
  "f05": {"type": "number", "maximum": 1e6}, "f06": {"type": "boolean"},
  "f07": {"enum": ["low", "medium", "high", "urgent"], "type": "string"},
  "f08": {"anyOf": [{"type": "string"}, {"type": "null"}]}, "f09": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
  "f10": {"type": "string", "format": "uuid"}, "f11": {"$ref": "#/$defs/Address"},
  "f12": {"anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}]},
  "f13": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "minItems": 1},
  "f14": {"type": "array", "items": {"type": "integer"}, "uniqueItems": true},
  "f15": {"type": "object", "additionalProperties": {"type": "string"}}, "f16": {"const": "v1"},
  "f17": {"type": "string", "pattern": "^[a-z][a-z0-9-]*$"}, "f18": {"type": "integer", "multipleOf": 5},
  "f19": {"type": "string", "format": "date"}, "f20": {"type": "string", "format": "uri"},
  "f21": {"type": "string"}, "f22": {"type": "integer"}, "f23": {"type": "number"}, "f24": {"type": "boolean"},
  "f25": {"type": "array", "items": {"type": "string"}}, "f26": {"anyOf": [{"type": "number"}, {"type": "null"}]},
  "f27": {"type": "string", "maxLength": 64}, "f28": {"type": "integer", "minimum": -10, "maximum": 10},
  "f29": {"type": "string", "format": "ipv4"}, "f30": {"type": "string", "format": "binary"}},
  "required": ["f01", "f02", "f04", "f11", "f13"], "title": "Nested30Request"})";

constexpr const char* kNested30Body = R"({"f01":"Quarterly report","f02":"alice@example.com",
  "f03":"2025-01-31T09:30:00Z","f04":42,"f05":1234.5,"f06":true,"f07":"high","f08":null,"f09":7,
  "f10":"123e4567-e89b-12d3-a456-426614174000",
  "f11":{"street":"1 Main St","city":"Springfield","zip":"12345","country":"US"},"f12":null,
  "f13":[{"sku":"A-1","qty":2,"price":9.99,"tags":["red","small"]},{"sku":"B-2","qty":1,"price":120}],
  "f14":[1,2,3,5,8],"f15":{"team":"core","env":"prod"},"f16":"v1","f17":"my-service","f18":25,
  "f19":"2025-02-01","f20":"https://example.com/a?b=c","f21":"text","f22":-3,"f23":0.5,"f24":false,
  "f25":["a","b","c"],"f26":3.14,"f27":"short","f28":0,"f29":"10.0.0.1","f30":"ZmlsZQ=="})";

double runFor(double seconds, const std::function<bool()>& once) {
  using Clock = std::chrono::steady_clock;
  // Warm up caches and branch predictors.
  for (int i = 0; i < 1000; ++i) {
    if (!once()) return -1;
  }
  std::uint64_t count = 0;
  const auto start = Clock::now();
  double elapsed = 0;
  do {
    for (int i = 0; i < 1000; ++i) {
      if (!once()) return -1;
    }
    count += 1000;
    elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  } while (elapsed < seconds);
  return static_cast<double>(count) / elapsed;
}

bool benchCase(const char* name, const char* schema_text, const char* body_text, double seconds) {
  rapidjson::Document schema_doc;
  if (!keyway::core::parseJsonText(schema_text, &schema_doc).ok()) {
    std::fprintf(stderr, "validate_bench: %s: schema does not parse\n", name);
    return false;
  }
  auto compiled = keyway::core::compileSchema(schema_doc, nullptr);
  if (!compiled.ok() || !(*compiled)->issues().empty()) {
    std::fprintf(stderr, "validate_bench: %s: schema does not compile cleanly\n", name);
    return false;
  }
  const CompiledSchema& schema = **compiled;
  rapidjson::Document body;
  if (!keyway::core::parseJsonText(body_text, &body).ok()) {
    std::fprintf(stderr, "validate_bench: %s: body does not parse\n", name);
    return false;
  }
  const auto errors = keyway::core::validate(schema, body);
  if (!errors.empty()) {
    std::fprintf(stderr, "validate_bench: %s: body is invalid: %s %s\n", name, errors[0].pointer.c_str(),
                 errors[0].reason.c_str());
    return false;
  }

  const double validate_only = runFor(seconds, [&] { return keyway::core::validate(schema, body).empty(); });
  const std::string_view bytes(body_text);
  const double parse_validate = runFor(seconds, [&] {
    rapidjson::Document doc;
    return keyway::core::parseJsonText(bytes, &doc).ok() && keyway::core::validate(schema, doc).empty();
  });
  if (validate_only < 0 || parse_validate < 0) return false;
  std::printf("validate_bench %s.validate %.0f\n", name, validate_only);
  std::printf("validate_bench %s.parse_validate %.0f\n", name, parse_validate);
  std::fflush(stdout);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 2.0;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
      seconds = std::atof(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: validate_bench [--seconds S]\n");
      return 2;
    }
  }
  if (!(seconds > 0)) seconds = 2.0;
  bool ok = benchCase("list_pull_requests", kListPullRequestsSchema, kListPullRequestsBody, seconds);
  ok = benchCase("nested30", kNested30Schema, kNested30Body, seconds) && ok;
  return ok ? 0 : 1;
}
