// Internal to core/json_schema/ (its .cpp files only): where a "$ref" points, in the documents compiled.
#pragma once

#include <rapidjson/document.h>

#include <cstddef>
#include <map>
#include <optional>
#include <string>

#include "core/json_schema.hpp"
#include "core/json_schema/values.hpp"

namespace keyway::core::json_schema {

// A schema value a reference can reach, with what compiling it needs.
struct Location {
  const Value* value = nullptr;
  std::string pointer;      // issue pointer of `value`
  std::string parent_base;  // base URI in effect where `value` sits (before its own id)
};

// The "$id"/"id" and "$anchor" index of the documents a compilation may reference, and the
// resolution of "$ref" values against it. Nothing is fetched: documents are the root schema and
// SchemaCompileOptions::documents.
class RefIndex {
 public:
  // Indexes `root` (at options.base_uri) and options.documents. `draft4` selects "id" over "$id"
  // and turns "$anchor" off.
  void build(const Value& root, const SchemaCompileOptions& options, bool draft4);

  // Base URI for the children of `v`, given the base where `v` sits.
  std::string baseInside(const Value& v, const std::string& parent_base) const;

  // Where `ref` (a "$ref" value, relative to `base`) points; nullopt with `why` set to the issue
  // message when it points to another document, an unknown anchor or nothing.
  std::optional<Location> resolve(const std::string& ref, const std::string& base, std::string* why) const;

 private:
  std::string idOf(const Value& v) const;
  // Records every "$id"/"id" and "$anchor" reachable through schema keywords.
  void scan(const Value& v, const std::string& pointer, const std::string& parent_base, std::size_t depth);

  bool draft4_ = false;
  std::map<std::string, Location> ids_;
};

}  // namespace keyway::core::json_schema
