// Internal to core/json_schema/ (its .cpp files only): the compiled schema graph compile.cpp builds.
// validate.cpp walks it. Nodes point at each other (refs, subschemas); a deque keeps them in place as nodes are added.
#pragma once

#include <rapidjson/document.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "core/json_schema.hpp"
#include "core/json_schema/formats.hpp"
#include "core/json_schema/regex.hpp"
#include "core/json_schema/values.hpp"

namespace keyway::core::json_schema {

struct Node;

struct Bound {
  Num value;
  bool exclusive = false;
  std::string message;
};

struct Property {
  std::string name;
  const Node* schema = nullptr;
};

struct Required {
  std::string name;
  int property_index = -1;  // index in Node::properties, or -1
};

struct DependentRequired {
  std::string name;
  std::vector<std::string> required;
};

struct DependentSchema {
  std::string name;
  const Node* schema = nullptr;
};

struct PatternProperty {
  std::shared_ptr<const Pattern> pattern;
  const Node* schema = nullptr;
};

// Keyword groups, allocated only when a subschema uses them: most subschemas of a pydantic schema
// are leaves such as {"type":"string"}, and a catalog holds thousands of schemas.
struct NumberKeywords {
  std::vector<Bound> lower;  // minimum / exclusiveMinimum
  std::vector<Bound> upper;  // maximum / exclusiveMaximum
  std::optional<Num> multiple_of;
  std::string multiple_of_message;
};

struct StringKeywords {
  std::optional<std::uint64_t> min_length;
  std::optional<std::uint64_t> max_length;
  std::shared_ptr<const Pattern> pattern;
  std::string pattern_message;
};

struct ArrayKeywords {
  std::vector<const Node*> prefix_items;
  const Node* items = nullptr;  // elements after prefix_items
  std::optional<std::uint64_t> min_items;
  std::optional<std::uint64_t> max_items;
  bool unique_items = false;
  const Node* contains = nullptr;
  std::optional<std::uint64_t> min_contains;
  std::optional<std::uint64_t> max_contains;
};

struct ObjectKeywords {
  std::vector<Property> properties;  // sorted by name once compiled
  std::vector<PatternProperty> pattern_properties;
  const Node* additional_properties = nullptr;  // null: anything goes
  const Node* property_names = nullptr;
  std::optional<std::uint64_t> min_properties;
  std::optional<std::uint64_t> max_properties;
  std::vector<Required> required;
  std::vector<DependentRequired> dependent_required;
  std::vector<DependentSchema> dependent_schemas;

  int findPropertyLinear(std::string_view name) const {
    for (std::size_t i = 0; i < properties.size(); ++i) {
      if (properties[i].name == name) return static_cast<int>(i);
    }
    return -1;
  }

  // Requires `properties` sorted (done at the end of compilation).
  int findProperty(std::string_view name) const {
    if (properties.size() <= 8) {
      for (std::size_t i = 0; i < properties.size(); ++i) {
        if (properties[i].name.size() == name.size() && properties[i].name == name) return static_cast<int>(i);
      }
      return -1;
    }
    const auto it = std::lower_bound(properties.begin(), properties.end(), name,
                                     [](const Property& p, std::string_view n) { return p.name < n; });
    if (it != properties.end() && it->name == name) return static_cast<int>(it - properties.begin());
    return -1;
  }
};

struct ValueKeywords {
  bool has_enum = false;
  std::vector<const Value*> enum_values;
  std::unordered_set<std::string_view> enum_strings;  // fast path for large string enums
  bool enum_only_strings = true;
  std::string enum_message;
  const Value* const_value = nullptr;
  std::string const_message;
};

struct CombinatorKeywords {
  std::vector<const Node*> all_of;
  std::vector<const Node*> any_of;
  std::vector<const Node*> one_of;
  const Node* not_schema = nullptr;
  const Node* if_schema = nullptr;
  const Node* then_schema = nullptr;
  const Node* else_schema = nullptr;
};

// Lazily created group: the const accessor returns a shared empty group when absent, the non-const
// one (compiler only) creates it.
template <class T>
class Group {
 public:
  const T& get() const {
    static const T kEmpty{};
    return ptr_ ? *ptr_ : kEmpty;
  }
  T& mut() {
    if (!ptr_) ptr_ = std::make_unique<T>();
    return *ptr_;
  }
  bool present() const { return ptr_ != nullptr; }

 private:
  std::unique_ptr<T> ptr_;
};

struct Node {
  enum class Kind : std::uint8_t { kSchema, kTrue, kFalse };
  Kind kind = Kind::kSchema;
  bool has_types = false;
  std::uint8_t types = 0;
  bool nullable = false;
  Format format = Format::kNone;
  // Which keyword groups exist, so validation skips whole sections.
  bool number_keywords = false;
  bool string_keywords = false;
  bool array_keywords = false;
  bool object_keywords = false;
  bool combinator_keywords = false;
  const char* format_message = "";
  const Node* ref = nullptr;
  Group<NumberKeywords> number_group;
  Group<StringKeywords> string_group;
  Group<ArrayKeywords> array_group;
  Group<ObjectKeywords> object_group;
  Group<ValueKeywords> value_group;
  Group<CombinatorKeywords> combinator_group;
  // kReject policy: constructs at this node that cannot be enforced.
  std::vector<std::string> unenforced;

  const NumberKeywords& numbers() const { return number_group.get(); }
  NumberKeywords& numbers() { return number_group.mut(); }
  const StringKeywords& strings() const { return string_group.get(); }
  StringKeywords& strings() { return string_group.mut(); }
  const ArrayKeywords& arrays() const { return array_group.get(); }
  ArrayKeywords& arrays() { return array_group.mut(); }
  const ObjectKeywords& objects() const { return object_group.get(); }
  ObjectKeywords& objects() { return object_group.mut(); }
  const ValueKeywords& values() const { return value_group.get(); }
  ValueKeywords& values() { return value_group.mut(); }
  const CombinatorKeywords& combinators() const { return combinator_group.get(); }
  CombinatorKeywords& combinators() { return combinator_group.mut(); }
};

}  // namespace keyway::core::json_schema

namespace keyway::core {

struct CompiledSchema::Impl {
  std::deque<json_schema::Node> nodes;
  // Allocator for enum/const copies. Small chunks: a Document's default 64 KiB pool per schema
  // would cost hundreds of MB for a catalog of thousands of actions.
  rapidjson::MemoryPoolAllocator<> values{512};
  std::deque<rapidjson::Value> owned_values;
  const json_schema::Node* root = nullptr;
  std::vector<SchemaIssue> issues;
  bool has_binary = false;
};

}  // namespace keyway::core
