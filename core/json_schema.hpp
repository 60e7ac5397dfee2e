// JSON Schema compilation and validation for BOSA action bodies: compile once, validate fast, report every violation.
// The one public header; the implementation is core/json_schema/: uri (URIs, JSON pointers), regex (ECMA-262 on
// RE2), formats, keywords, refs ($id/$anchor/$ref), graph (the compiled form), compile, validate.
#pragma once

#include <rapidjson/document.h>

#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"

namespace keyway::core {

// A schema construct keyway cannot enforce (remote $ref, unknown keyword, regex feature RE2 lacks,
// unknown format, malformed keyword value, ...). `schema_pointer` is the RFC 6901 pointer of the
// offending keyword inside the compiled document (prefixed with "<uri>#" for a registered document).
// Messages never contain instance data; they may quote schema text (upstream-controlled, not secret).
struct SchemaIssue {
  std::string schema_pointer;
  std::string message;
};

// Which keyword semantics to apply. kAuto reads "$schema": draft-03/04 URIs select kDraft4, anything
// else (including no "$schema", as pydantic emits) selects kModern (2020-12 keywords, with the
// draft-04..2019 spellings still understood: `definitions`, `dependencies`, tuple `items`,
// boolean `exclusiveMinimum`). The visible difference: in kDraft4 a "$ref" overrides its siblings;
// in kModern siblings of "$ref" are enforced too.
enum class SchemaDialect { kAuto, kDraft4, kModern };

// What validate() does when an instance reaches a construct listed as an issue.
//   kReport: the construct is skipped; the caller must surface the issues (log, metric, CLI).
//   kReject: the instance gets a violation "cannot be validated: <issue>" at that location.
enum class UnenforcedPolicy { kReport, kReject };

// Compiled regular expressions shared between compileSchema() calls: a catalog compiles thousands
// of schemas that repeat the same patterns, and each pattern text then compiles (and is held in
// memory) once. Not thread-safe: one cache per compiling thread. Compiled schemas keep the
// patterns they use alive after the cache is gone.
class PatternCache;
std::shared_ptr<PatternCache> makePatternCache();

struct SchemaCompileOptions {
  SchemaDialect dialect = SchemaDialect::kAuto;
  UnenforcedPolicy unenforced = UnenforcedPolicy::kReport;
  // The retrieval URI of the root schema (base for relative "$id"/"$ref"); may be empty.
  std::string base_uri;
  // Further documents a "$ref" may point into, by absolute URI (no fragment). Nothing is ever
  // fetched: a reference to any other document is a "remote $ref" issue. Pointers are borrowed
  // for the duration of compileSchema() only.
  std::map<std::string, const rapidjson::Value*> documents;
  // Optional; see PatternCache.
  std::shared_ptr<PatternCache> pattern_cache;
};

// Limits. Violations beyond kMaxSchemaViolations are summarised by one final entry. Instances nested
// deeper than kMaxJsonDepth (where the schema descends) are a violation, never a stack overflow.
inline constexpr std::size_t kMaxSchemaViolations = 100;
inline constexpr std::size_t kMaxJsonDepth = 64;

// A compiled schema: immutable after compileSchema() returns, shared across threads (every member
// function and validate() are const and thread-safe). Owns copies of everything it needs, so the
// source document may be freed after compilation.
class CompiledSchema {
 public:
  struct Impl;  // defined in core/json_schema/graph.hpp
  explicit CompiledSchema(std::unique_ptr<Impl> impl);
  ~CompiledSchema();
  CompiledSchema(const CompiledSchema&) = delete;
  CompiledSchema& operator=(const CompiledSchema&) = delete;

  // Everything not enforced, in document order (the same list compileSchema() appended to).
  const std::vector<SchemaIssue>& issues() const;
  // True when some reachable subschema is {"type":"string","format":"binary"}: a file field, so
  // the action may be called with a multipart or form-encoded body (docs/bosa.md).
  bool hasBinaryFields() const;
  // Number of compiled subschemas (for tests and diagnostics).
  std::size_t nodeCount() const;

  const Impl& impl() const { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// Compiles `schema` (an object or a boolean) with default options (kAuto, kReport). Resolves local
// references ("#", "#/$defs/X", "#/definitions/X", any JSON pointer with ~0 ~1 and %-escapes,
// "$id"/"id" base changes, "$anchor"), recursive ones included. Every construct it cannot enforce is
// appended to `issues` (may be null) and kept in CompiledSchema::issues(). Fails only when the root
// is neither an object nor a boolean (code kInvalidParameters). Never throws; never recurses
// deeper than a fixed bound, whatever the input.
Result<std::shared_ptr<const CompiledSchema>> compileSchema(const rapidjson::Value& schema,
                                                            std::vector<SchemaIssue>* issues);
Result<std::shared_ptr<const CompiledSchema>> compileSchema(const rapidjson::Value& schema,
                                                            const SchemaCompileOptions& options,
                                                            std::vector<SchemaIssue>* issues);

// Validates `instance`; returns every violation (empty = valid), at most `max_violations`
// (the last entry then says how many were left out). Each entry is {pointer: RFC 6901 pointer of
// the offending instance location, escaped; reason: e.g. "expected integer, got string",
// "must be at least 1", "required property is missing" (pointer = the missing property's own
// pointer), "unexpected property", "must match pattern ^[a-z]+$", "must be one of [...]"}.
// Reasons never quote instance values (they could be secrets), only schema values and types.
// Bounded work: a hostile schema/instance pair gets a "too complex" violation instead of a hang.
std::vector<ErrorDetail> validate(const CompiledSchema& schema, const rapidjson::Value& instance);
std::vector<ErrorDetail> validate(const CompiledSchema& schema, const rapidjson::Value& instance,
                                  std::size_t max_violations);

// validate(...).empty(), but stops at the first violation and allocates nothing on the way.
bool isValid(const CompiledSchema& schema, const rapidjson::Value& instance);

// Parses untrusted JSON text for validation: RapidJSON's iterative parser (no recursion, whatever
// the nesting), UTF-8 checked, whole input must be one JSON value. On error returns kBadRequest,
// message "not valid JSON: <reason> (at byte N)" (callers add their context).
// `doc` must be non-null; it is overwritten.
Status parseJsonText(std::string_view text, rapidjson::Document* doc);

}  // namespace keyway::core
