// JSON Schema compiler (schema document -> immutable node graph) and validator (graph x instance -> violations).
#include "core/json_schema.hpp"

#include <rapidjson/error/en.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <deque>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "core/json_schema/formats.hpp"
#include "core/json_schema/regex.hpp"
#include "core/json_schema/uri.hpp"
#include "core/json_schema/values.hpp"

namespace keyway::core {

namespace {

using namespace json_schema;  // the pieces already cut out into core/json_schema/

// Bounds that keep hostile input from costing stack or unbounded time.
constexpr std::size_t kMaxSchemaNesting = 128;  // syntactic subschema nesting that gets compiled
constexpr std::size_t kMaxEvalDepth = 512;      // nested node evaluations (refs/allOf without progress)
constexpr std::size_t kMaxValueDepth = 64;      // enum/const values nested deeper are not enforced
constexpr std::uint64_t kBaseBudget = 4000000;  // evaluation steps before the budget is sized
constexpr std::uint64_t kStepsPerInstanceNode = 64;
constexpr int kMaxCompatHops = 8;

// ---------------------------------------------------------------------------------------------
// The compiled graph

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

}  // namespace

struct CompiledSchema::Impl {
  std::deque<Node> nodes;
  // Allocator for enum/const copies. Small chunks: a Document's default 64 KiB pool per schema
  // would cost hundreds of MB for a catalog of thousands of actions.
  rapidjson::MemoryPoolAllocator<> values{512};
  std::deque<Value> owned_values;
  const Node* root = nullptr;
  std::vector<SchemaIssue> issues;
  bool has_binary = false;
};

CompiledSchema::CompiledSchema(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CompiledSchema::~CompiledSchema() = default;
const std::vector<SchemaIssue>& CompiledSchema::issues() const {
  return impl_->issues;
}
bool CompiledSchema::hasBinaryFields() const {
  return impl_->has_binary;
}
std::size_t CompiledSchema::nodeCount() const {
  return impl_->nodes.size();
}

namespace {

// ---------------------------------------------------------------------------------------------
// Compiler

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

struct Location {
  const Value* value = nullptr;
  std::string pointer;      // issue pointer of `value`
  std::string parent_base;  // base URI in effect where `value` sits (before its own id)
};

struct Work {
  Node* node = nullptr;
  const Value* value = nullptr;
  std::string pointer;
  std::string base;  // base URI of the parent (the node applies its own id)
  std::size_t depth = 0;
};

class Compiler {
 public:
  Compiler(const SchemaCompileOptions& options, CompiledSchema::Impl* impl)
      : options_(options), impl_(impl), reject_(options.unenforced == UnenforcedPolicy::kReject) {}

  void compile(const Value& root) {
    draft4_ = options_.dialect == SchemaDialect::kDraft4;
    if (options_.dialect == SchemaDialect::kAuto && root.IsObject()) {
      const auto it = root.FindMember("$schema");
      if (it != root.MemberEnd() && it->value.IsString()) {
        const std::string_view uri(it->value.GetString(), it->value.GetStringLength());
        draft4_ = uri.find("draft-04") != std::string_view::npos || uri.find("draft-03") != std::string_view::npos;
      }
    }
    ids_[stripEmptyFragment(withoutFragment(options_.base_uri))] = Location{&root, "", options_.base_uri};
    scanIds(root, "", options_.base_uri, 0);
    for (const auto& [uri, doc] : options_.documents) {
      if (doc == nullptr) continue;
      const std::string key = stripEmptyFragment(withoutFragment(uri));
      if (ids_.count(key) == 0) ids_[key] = Location{doc, key + "#", key};
      scanIds(*doc, key + "#", key, 0);
    }
    impl_->root = nodeFor(&root, "", options_.base_uri, 0);
    while (!work_.empty()) {
      Work w = std::move(work_.front());
      work_.pop_front();
      compileNode(w);
    }
  }

 private:
  void issue(const std::string& pointer, std::string message, Node* node) {
    if (reject_ && node != nullptr) node->unenforced.push_back(message);
    impl_->issues.push_back(SchemaIssue{pointer, std::move(message)});
  }

  std::string idOf(const Value& v) const {
    if (!v.IsObject()) return {};
    const auto it = v.FindMember(draft4_ ? "id" : "$id");
    if (it == v.MemberEnd() || !it->value.IsString()) return {};
    return std::string(it->value.GetString(), it->value.GetStringLength());
  }

  // Base URI for the children of `v`, given the base where `v` sits.
  std::string baseInside(const Value& v, const std::string& parent_base) const {
    const std::string id = idOf(v);
    if (id.empty() || id[0] == '#') return parent_base;
    return resolveUri(parent_base, id);
  }

  // Records every "$id"/"id" and "$anchor" reachable through schema keywords.
  void scanIds(const Value& v, const std::string& pointer, const std::string& parent_base, std::size_t depth) {
    if (!v.IsObject() || depth > kMaxSchemaNesting) return;
    const std::string id = idOf(v);
    std::string base = parent_base;
    if (!id.empty()) {
      const std::string resolved = resolveUri(parent_base, id);
      if (id[0] != '#') base = resolved;
      const std::string key = stripEmptyFragment(resolved);
      if (ids_.count(key) == 0) ids_[key] = Location{&v, pointer, parent_base};
    }
    if (!draft4_) {
      for (const char* anchor_kw : {"$anchor", "$dynamicAnchor"}) {
        const auto a = v.FindMember(anchor_kw);
        if (a != v.MemberEnd() && a->value.IsString()) {
          const std::string key = stripEmptyFragment(withoutFragment(base)) + "#" + a->value.GetString();
          if (ids_.count(key) == 0) ids_[key] = Location{&v, pointer, parent_base};
        }
      }
    }
    for (auto m = v.MemberBegin(); m != v.MemberEnd(); ++m) {
      const std::string_view key(m->name.GetString(), m->name.GetStringLength());
      const std::string child = childPointer(pointer, key);
      const auto kw = keywordTable().find(key);
      if (kw == keywordTable().end()) continue;
      switch (kw->second) {
        case Keyword::kProperties:
        case Keyword::kPatternProperties:
        case Keyword::kDefinitions:
        case Keyword::kDependentSchemas:
        case Keyword::kDependencies:
          if (m->value.IsObject()) {
            for (auto s = m->value.MemberBegin(); s != m->value.MemberEnd(); ++s) {
              scanIds(s->value, childPointer(child, std::string_view(s->name.GetString(), s->name.GetStringLength())),
                      base, depth + 1);
            }
          }
          break;
        case Keyword::kItems:
        case Keyword::kPrefixItems:
        case Keyword::kAllOf:
        case Keyword::kAnyOf:
        case Keyword::kOneOf:
          if (m->value.IsArray()) {
            for (SizeType i = 0; i < m->value.Size(); ++i)
              scanIds(m->value[i], childPointer(child, i), base, depth + 1);
          } else {
            scanIds(m->value, child, base, depth + 1);
          }
          break;
        case Keyword::kAdditionalItems:
        case Keyword::kAdditionalProperties:
        case Keyword::kContains:
        case Keyword::kPropertyNames:
        case Keyword::kNot:
        case Keyword::kIf:
        case Keyword::kThen:
        case Keyword::kElse: scanIds(m->value, child, base, depth + 1); break;
        default: break;
      }
    }
  }

  Node* nodeFor(const Value* v, const std::string& pointer, const std::string& parent_base, std::size_t depth) {
    const auto it = memo_.find(v);
    if (it != memo_.end()) return it->second;
    impl_->nodes.emplace_back();
    Node* node = &impl_->nodes.back();
    memo_.emplace(v, node);
    work_.push_back(Work{node, v, pointer, parent_base, depth});
    return node;
  }

  // Resolves a "$ref" value; null (with an issue) when it cannot be.
  const Node* resolveRef(const std::string& ref, const std::string& pointer, const std::string& base, Node* node) {
    const std::string absolute = resolveUri(base, ref);
    const std::size_t hash = absolute.find('#');
    const std::string doc = absolute.substr(0, hash);
    const std::string fragment = hash == std::string::npos ? std::string() : percentDecode(absolute.substr(hash + 1));
    const auto loc = ids_.find(doc);
    if (loc == ids_.end()) {
      issue(pointer, "remote $ref " + quote(ref) + " is not resolved (keyway never fetches schemas)", node);
      return nullptr;
    }
    if (fragment.empty()) return nodeFor(loc->second.value, loc->second.pointer, loc->second.parent_base, 0);
    if (fragment[0] != '/') {
      const auto anchor = ids_.find(doc + "#" + fragment);
      if (anchor == ids_.end()) {
        issue(pointer, "$ref " + quote(ref) + " names an unknown anchor", node);
        return nullptr;
      }
      return nodeFor(anchor->second.value, anchor->second.pointer, anchor->second.parent_base, 0);
    }
    // Walk the JSON pointer, tracking base-URI changes on the way.
    const Value* cur = loc->second.value;
    std::string cur_base = loc->second.parent_base;
    std::size_t i = 1;
    while (true) {
      const std::size_t e = std::min(fragment.find('/', i), fragment.size());
      std::string token;
      for (std::size_t k = i; k < e; ++k) {
        if (fragment[k] == '~' && k + 1 < e && (fragment[k + 1] == '0' || fragment[k + 1] == '1')) {
          token.push_back(fragment[k + 1] == '0' ? '~' : '/');
          ++k;
        } else {
          token.push_back(fragment[k]);
        }
      }
      cur_base = baseInside(*cur, cur_base);
      const Value* next = nullptr;
      if (cur->IsObject()) {
        const auto m = cur->FindMember(Value(rapidjson::StringRef(token.data(), static_cast<SizeType>(token.size()))));
        if (m != cur->MemberEnd()) next = &m->value;
      } else if (cur->IsArray()) {
        const bool numeric = !token.empty() && token.size() <= 9 &&
                             std::all_of(token.begin(), token.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
                             (token.size() == 1 || token[0] != '0');
        if (numeric) {
          const auto index = static_cast<SizeType>(std::stoul(token));
          if (index < cur->Size()) next = &(*cur)[index];
        }
      }
      if (next == nullptr) {
        issue(pointer, "$ref " + quote(ref) + " does not resolve to anything in the document", node);
        return nullptr;
      }
      cur = next;
      if (e >= fragment.size()) break;
      i = e + 1;
    }
    return nodeFor(cur, loc->second.pointer + fragment, cur_base, 0);
  }

  const Node* subschema(const Value& v, const std::string& pointer, const std::string& base, std::size_t depth) {
    return nodeFor(&v, pointer, base, depth + 1);
  }

  std::optional<std::uint64_t> count(const Value& v, const std::string& pointer, const char* keyword, Node* node) {
    auto n = nonNegativeInteger(v);
    if (!n) issue(pointer, std::string(keyword) + " must be a non-negative integer", node);
    return n;
  }

  std::shared_ptr<const Pattern> pattern(std::string_view source, std::string* why) {
    if (options_.pattern_cache) return options_.pattern_cache->get(source, why);
    return compilePattern(source, kRe2MaxMem, why);
  }

  const Value* ownValue(const Value& v) {
    impl_->owned_values.emplace_back();
    impl_->owned_values.back().CopyFrom(v, impl_->values);
    return &impl_->owned_values.back();
  }

  void addBound(std::vector<Bound>* bounds, const Value& v, bool exclusive, bool lower) {
    Bound b;
    b.value = Num::of(v);
    b.exclusive = exclusive;
    const std::string num = formatNum(b.value);
    if (lower) {
      b.message = exclusive ? "must be greater than " + num : "must be at least " + num;
    } else {
      b.message = exclusive ? "must be less than " + num : "must be at most " + num;
    }
    bounds->push_back(std::move(b));
  }

  std::uint8_t typeBit(std::string_view name) const {
    if (name == "null") return kTNull;
    if (name == "boolean") return kTBoolean;
    if (name == "object") return kTObject;
    if (name == "array") return kTArray;
    if (name == "number") return kTNumber;
    if (name == "string") return kTString;
    if (name == "integer") return kTInteger;
    return 0;
  }

  void compileNode(const Work& w) {
    Node& n = *w.node;
    const Value& v = *w.value;
    if (v.IsBool()) {
      n.kind = v.GetBool() ? Node::Kind::kTrue : Node::Kind::kFalse;
      return;
    }
    if (!v.IsObject()) {
      issue(w.pointer, "a schema must be an object or a boolean", &n);
      return;
    }
    if (w.depth > kMaxSchemaNesting) {
      issue(w.pointer, "schema nested deeper than " + std::to_string(kMaxSchemaNesting) + " levels is not enforced",
            &n);
      return;
    }
    const std::string base = baseInside(v, w.base);
    if (draft4_) {
      // Draft 4: "$ref" replaces the whole schema object; its siblings are ignored.
      const auto ref = v.FindMember("$ref");
      if (ref != v.MemberEnd()) {
        if (ref->value.IsString()) {
          n.ref = resolveRef(ref->value.GetString(), childPointer(w.pointer, "$ref"), base, &n);
        } else {
          issue(childPointer(w.pointer, "$ref"), "$ref must be a string", &n);
        }
        return;
      }
    }

    const Value* items = nullptr;
    const Value* prefix_items = nullptr;
    const Value* additional_items = nullptr;
    const Value* exclusive_max_flag = nullptr;
    const Value* exclusive_min_flag = nullptr;
    const Value* maximum = nullptr;
    const Value* minimum = nullptr;
    std::vector<std::string> required_names;

    for (auto m = v.MemberBegin(); m != v.MemberEnd(); ++m) {
      const std::string_view key(m->name.GetString(), m->name.GetStringLength());
      const Value& val = m->value;
      const std::string ptr = childPointer(w.pointer, key);
      const auto kw_it = keywordTable().find(key);
      if (kw_it == keywordTable().end()) {
        if (key.size() >= 2 && key[0] == 'x' && key[1] == '-') continue;  // vendor extension: annotation
        issue(ptr, "unknown keyword " + quote(key) + " is not enforced", &n);
        continue;
      }
      switch (kw_it->second) {
        case Keyword::kType: {
          std::uint8_t mask = 0;
          bool bad = false;
          auto add = [&](const Value& t) {
            const std::uint8_t bit = t.IsString() ? typeBit(std::string_view(t.GetString(), t.GetStringLength())) : 0;
            if (bit == 0) bad = true;
            mask |= bit;
          };
          if (val.IsArray()) {
            for (const auto& t : val.GetArray()) add(t);
            if (val.Empty()) bad = true;
          } else {
            add(val);
          }
          if (bad) {
            issue(ptr, "type " + quote(val) + " is not a valid type (or list of types)", &n);
          } else {
            n.has_types = true;
            n.types = mask;
          }
          break;
        }
        case Keyword::kEnum: {
          if (!val.IsArray()) {
            issue(ptr, "enum must be an array", &n);
            break;
          }
          if (deeperThan(val, kMaxValueDepth + 1)) {
            issue(ptr, "enum values nested deeper than " + std::to_string(kMaxValueDepth) + " levels are not enforced",
                  &n);
            break;
          }
          n.values().has_enum = true;
          for (const auto& e : val.GetArray()) {
            const Value* owned = ownValue(e);
            n.values().enum_values.push_back(owned);
            if (!e.IsString()) n.values().enum_only_strings = false;
          }
          if (n.values().enum_values.size() > 8) {
            for (const Value* e : n.values().enum_values) {
              if (e->IsString()) n.values().enum_strings.emplace(e->GetString(), e->GetStringLength());
            }
          }
          std::string msg = "must be one of [";
          std::size_t shown = 0;
          for (const Value* e : n.values().enum_values) {
            if (msg.size() > kMaxQuotedChars) break;
            if (shown > 0) msg += ", ";
            renderValue(*e, &msg, 1);
            ++shown;
          }
          if (shown < n.values().enum_values.size())
            msg += ", ... (" + std::to_string(n.values().enum_values.size() - shown) + " more)";
          msg += "]";
          n.values().enum_message = std::move(msg);
          break;
        }
        case Keyword::kConst:
          if (deeperThan(val, kMaxValueDepth + 1)) {
            issue(ptr, "const value nested deeper than " + std::to_string(kMaxValueDepth) + " levels is not enforced",
                  &n);
            break;
          }
          n.values().const_value = ownValue(val);
          n.values().const_message = "must equal " + quote(val);
          break;
        case Keyword::kMultipleOf:
          if (!val.IsNumber() || !Num::of(val).positive()) {
            issue(ptr, "multipleOf must be a number greater than 0", &n);
            break;
          }
          n.numbers().multiple_of = Num::of(val);
          n.numbers().multiple_of_message = "must be a multiple of " + formatNum(*n.numbers().multiple_of);
          break;
        case Keyword::kMaximum:
        case Keyword::kMinimum:
          if (!val.IsNumber()) {
            issue(ptr, std::string(key) + " must be a number", &n);
            break;
          }
          (kw_it->second == Keyword::kMaximum ? maximum : minimum) = &val;
          break;
        case Keyword::kExclusiveMaximum:
        case Keyword::kExclusiveMinimum: {
          const bool is_max = kw_it->second == Keyword::kExclusiveMaximum;
          if (val.IsBool()) {  // draft-04 form: modifies maximum/minimum
            (is_max ? exclusive_max_flag : exclusive_min_flag) = &val;
          } else if (val.IsNumber()) {
            addBound(is_max ? &n.numbers().upper : &n.numbers().lower, val, true, !is_max);
          } else {
            issue(ptr, std::string(key) + " must be a number (or a boolean in draft 4)", &n);
          }
          break;
        }
        case Keyword::kMaxLength: n.strings().max_length = count(val, ptr, "maxLength", &n); break;
        case Keyword::kMinLength: n.strings().min_length = count(val, ptr, "minLength", &n); break;
        case Keyword::kPattern: {
          if (!val.IsString()) {
            issue(ptr, "pattern must be a string", &n);
            break;
          }
          std::string why;
          const std::string_view src(val.GetString(), val.GetStringLength());
          n.strings().pattern = pattern(src, &why);
          if (!n.strings().pattern) {
            issue(ptr, "pattern " + quote(val) + " cannot be enforced: " + why, &n);
            break;
          }
          n.strings().pattern_message = "must match pattern " + std::string(src.substr(0, kMaxQuotedChars * 2));
          break;
        }
        case Keyword::kFormat: {
          if (!val.IsString()) {
            issue(ptr, "format must be a string", &n);
            break;
          }
          const std::string_view name(val.GetString(), val.GetStringLength());
          const FormatInfo* info = findFormat(name);
          if (info == nullptr) {
            issue(ptr, "format " + quote(val) + " is not enforced", &n);
            break;
          }
          n.format = info->format;
          n.format_message = info->message;
          if (info->format == Format::kBinary) impl_->has_binary = true;
          break;
        }
        case Keyword::kItems: items = &val; break;
        case Keyword::kPrefixItems: prefix_items = &val; break;
        case Keyword::kAdditionalItems: additional_items = &val; break;
        case Keyword::kMaxItems: n.arrays().max_items = count(val, ptr, "maxItems", &n); break;
        case Keyword::kMinItems: n.arrays().min_items = count(val, ptr, "minItems", &n); break;
        case Keyword::kUniqueItems:
          if (!val.IsBool()) {
            issue(ptr, "uniqueItems must be a boolean", &n);
            break;
          }
          n.arrays().unique_items = val.GetBool();
          break;
        case Keyword::kContains: n.arrays().contains = subschema(val, ptr, base, w.depth); break;
        case Keyword::kMinContains: n.arrays().min_contains = count(val, ptr, "minContains", &n); break;
        case Keyword::kMaxContains: n.arrays().max_contains = count(val, ptr, "maxContains", &n); break;
        case Keyword::kMaxProperties: n.objects().max_properties = count(val, ptr, "maxProperties", &n); break;
        case Keyword::kMinProperties: n.objects().min_properties = count(val, ptr, "minProperties", &n); break;
        case Keyword::kRequired:
          if (!val.IsArray()) {
            issue(ptr, "required must be an array of strings", &n);
            break;
          }
          for (SizeType i = 0; i < val.Size(); ++i) {
            if (!val[i].IsString()) {
              issue(childPointer(ptr, i), "required entries must be strings", &n);
              continue;
            }
            std::string name(val[i].GetString(), val[i].GetStringLength());
            if (std::find(required_names.begin(), required_names.end(), name) == required_names.end()) {
              required_names.push_back(std::move(name));
            }
          }
          break;
        case Keyword::kProperties:
          if (!val.IsObject()) {
            issue(ptr, "properties must be an object", &n);
            break;
          }
          for (auto p = val.MemberBegin(); p != val.MemberEnd(); ++p) {
            const std::string_view name(p->name.GetString(), p->name.GetStringLength());
            if (n.objects().findPropertyLinear(name) >= 0) continue;  // duplicate key in the schema: first wins
            n.objects().properties.push_back(
                Property{std::string(name), subschema(p->value, childPointer(ptr, name), base, w.depth)});
          }
          break;
        case Keyword::kPatternProperties:
          if (!val.IsObject()) {
            issue(ptr, "patternProperties must be an object", &n);
            break;
          }
          for (auto p = val.MemberBegin(); p != val.MemberEnd(); ++p) {
            const std::string_view src(p->name.GetString(), p->name.GetStringLength());
            const std::string child = childPointer(ptr, src);
            std::string why;
            auto compiled = pattern(src, &why);
            if (!compiled) {
              issue(child, "patternProperties pattern " + quote(src) + " cannot be enforced: " + why, &n);
              continue;
            }
            n.objects().pattern_properties.push_back(
                PatternProperty{std::move(compiled), subschema(p->value, child, base, w.depth)});
          }
          break;
        case Keyword::kAdditionalProperties:
          n.objects().additional_properties = subschema(val, ptr, base, w.depth);
          break;
        case Keyword::kPropertyNames: n.objects().property_names = subschema(val, ptr, base, w.depth); break;
        case Keyword::kDependencies:
        case Keyword::kDependentRequired:
        case Keyword::kDependentSchemas: {
          if (!val.IsObject()) {
            issue(ptr, std::string(key) + " must be an object", &n);
            break;
          }
          for (auto d = val.MemberBegin(); d != val.MemberEnd(); ++d) {
            const std::string name(d->name.GetString(), d->name.GetStringLength());
            const std::string child = childPointer(ptr, name);
            const bool as_array = d->value.IsArray() && kw_it->second != Keyword::kDependentSchemas;
            const bool as_schema =
                (d->value.IsObject() || d->value.IsBool()) && kw_it->second != Keyword::kDependentRequired;
            if (as_array) {
              DependentRequired dep{name, {}};
              for (const auto& r : d->value.GetArray()) {
                if (r.IsString()) {
                  dep.required.emplace_back(r.GetString(), r.GetStringLength());
                } else {
                  issue(child, "dependency lists must hold strings", &n);
                }
              }
              n.objects().dependent_required.push_back(std::move(dep));
            } else if (as_schema) {
              n.objects().dependent_schemas.push_back(DependentSchema{name, subschema(d->value, child, base, w.depth)});
            } else {
              issue(child,
                    std::string(key) + " entries must be " +
                        (kw_it->second == Keyword::kDependentRequired ? "arrays of strings" : "schemas"),
                    &n);
            }
          }
          break;
        }
        case Keyword::kAllOf:
        case Keyword::kAnyOf:
        case Keyword::kOneOf: {
          if (!val.IsArray() || val.Empty()) {
            issue(ptr, std::string(key) + " must be a non-empty array of schemas", &n);
            break;
          }
          auto& list = kw_it->second == Keyword::kAllOf
                           ? n.combinators().all_of
                           : (kw_it->second == Keyword::kAnyOf ? n.combinators().any_of : n.combinators().one_of);
          for (SizeType i = 0; i < val.Size(); ++i)
            list.push_back(subschema(val[i], childPointer(ptr, i), base, w.depth));
          break;
        }
        case Keyword::kNot: n.combinators().not_schema = subschema(val, ptr, base, w.depth); break;
        case Keyword::kIf: n.combinators().if_schema = subschema(val, ptr, base, w.depth); break;
        case Keyword::kThen: n.combinators().then_schema = subschema(val, ptr, base, w.depth); break;
        case Keyword::kElse: n.combinators().else_schema = subschema(val, ptr, base, w.depth); break;
        case Keyword::kRef:
          if (!val.IsString()) {
            issue(ptr, "$ref must be a string", &n);
            break;
          }
          n.ref = resolveRef(val.GetString(), ptr, base, &n);
          break;
        case Keyword::kNullable:
          if (!val.IsBool()) {
            issue(ptr, "nullable must be a boolean", &n);
            break;
          }
          n.nullable = val.GetBool();
          break;
        case Keyword::kDefinitions:
          if (!val.IsObject()) issue(ptr, std::string(key) + " must be an object", &n);
          break;  // compiled on demand, through $ref
        case Keyword::kStructural:
        case Keyword::kAnnotation: break;
        case Keyword::kUnsupported: issue(ptr, "keyword " + quote(key) + " is not supported by keyway", &n); break;
      }
    }

    // Numeric bounds, with the draft-04 boolean exclusive flags.
    if (maximum != nullptr) {
      addBound(&n.numbers().upper, *maximum, exclusive_max_flag != nullptr && exclusive_max_flag->GetBool(), false);
    }
    if (minimum != nullptr) {
      addBound(&n.numbers().lower, *minimum, exclusive_min_flag != nullptr && exclusive_min_flag->GetBool(), true);
    }

    // Arrays: one model for draft-04 tuples (items[] + additionalItems) and 2020-12 (prefixItems + items).
    const std::string base_ptr = w.pointer;
    auto schemaList = [&](const Value& arr, const std::string& ptr) {
      for (SizeType i = 0; i < arr.Size(); ++i)
        n.arrays().prefix_items.push_back(subschema(arr[i], childPointer(ptr, i), base, w.depth));
    };
    if (prefix_items != nullptr) {
      if (prefix_items->IsArray()) {
        schemaList(*prefix_items, childPointer(base_ptr, "prefixItems"));
      } else {
        issue(childPointer(base_ptr, "prefixItems"), "prefixItems must be an array of schemas", &n);
      }
      if (items != nullptr) {
        if (items->IsArray()) {
          issue(childPointer(base_ptr, "items"), "items must be a schema when prefixItems is present", &n);
        } else {
          n.arrays().items = subschema(*items, childPointer(base_ptr, "items"), base, w.depth);
        }
      }
    } else if (items != nullptr && items->IsArray()) {
      schemaList(*items, childPointer(base_ptr, "items"));
      if (additional_items != nullptr) {
        n.arrays().items = subschema(*additional_items, childPointer(base_ptr, "additionalItems"), base, w.depth);
      }
    } else if (items != nullptr) {
      n.arrays().items = subschema(*items, childPointer(base_ptr, "items"), base, w.depth);
    }

    // Objects: properties sorted for binary search; required names mapped to property slots.
    if (n.object_group.present() || !required_names.empty()) {
      ObjectKeywords& obj = n.objects();
      std::sort(obj.properties.begin(), obj.properties.end(),
                [](const Property& a, const Property& b) { return a.name < b.name; });
      for (auto& name : required_names) {
        Required r{std::move(name), -1};
        r.property_index = obj.findProperty(r.name);
        obj.required.push_back(std::move(r));
      }
    }

    const Node& view = n;  // const accessors: no group gets created below
    const NumberKeywords& num = view.numbers();
    const StringKeywords& str = view.strings();
    const ArrayKeywords& arr = view.arrays();
    const ObjectKeywords& obj = view.objects();
    const CombinatorKeywords& comb = view.combinators();
    n.number_keywords = !num.lower.empty() || !num.upper.empty() || num.multiple_of.has_value() ||
                        n.format == Format::kInt32 || n.format == Format::kInt64;
    n.string_keywords = str.min_length || str.max_length || str.pattern ||
                        (n.format != Format::kNone && n.format != Format::kBinary && n.format != Format::kPassword);
    n.array_keywords = !arr.prefix_items.empty() || arr.items != nullptr || arr.min_items || arr.max_items ||
                       arr.unique_items || arr.contains != nullptr;
    n.object_keywords = !obj.properties.empty() || !obj.pattern_properties.empty() ||
                        obj.additional_properties != nullptr || obj.property_names != nullptr || obj.min_properties ||
                        obj.max_properties || !obj.required.empty() || !obj.dependent_required.empty() ||
                        !obj.dependent_schemas.empty();
    n.combinator_keywords = !comb.all_of.empty() || !comb.any_of.empty() || !comb.one_of.empty() ||
                            comb.not_schema != nullptr || comb.if_schema != nullptr;
  }

  const SchemaCompileOptions& options_;
  CompiledSchema::Impl* impl_;
  bool reject_;
  bool draft4_ = false;
  std::map<std::string, Location> ids_;
  std::unordered_map<const Value*, Node*> memo_;
  std::deque<Work> work_;
};

// ---------------------------------------------------------------------------------------------
// Validator

struct Segment {
  const char* name = nullptr;
  SizeType length = 0;
  SizeType index = 0;
  bool is_index = false;
};

std::size_t utf8Length(const char* s, std::size_t n) {
  std::size_t count = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) ++count;
  }
  return count;
}

std::string plural(std::uint64_t n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

class Validator {
 public:
  Validator(const CompiledSchema::Impl& schema, const Value& root, std::vector<ErrorDetail>* out,
            std::size_t max_violations)
      : schema_(schema), root_(root), out_(out), max_(std::max<std::size_t>(max_violations, 1)) {}

  bool run() {
    const bool ok = check(*schema_.root, root_, out_ != nullptr);
    if (aborted_) {
      stop_ = false;
      add(abort_pointer_, abort_reason_);
      return false;
    }
    return ok;
  }

 private:
  // ---- violations and pointers
  std::string pointer() const {
    std::string out;
    for (std::size_t i = 0; i < depth_; ++i) {
      const Segment& s = path_[i];
      if (s.is_index) {
        out += '/';
        out += std::to_string(s.index);
      } else {
        appendPointerToken(&out, std::string_view(s.name, s.length));
      }
    }
    return out;
  }

  void add(std::string ptr, std::string reason) {
    if (out_ == nullptr || stop_) return;
    if (out_->size() < max_) {
      out_->push_back(ErrorDetail{std::move(ptr), std::move(reason)});
      return;
    }
    // One violation too many: the last slot becomes a summary, and validation stops.
    out_->back() = ErrorDetail{"", "too many violations: only the first " + std::to_string(max_ - 1) + " are listed"};
    stop_ = true;
  }

  void addError(std::string reason) { add(pointer(), std::move(reason)); }

  void addErrorAt(const Segment& seg, std::string reason) {
    path_[depth_++] = seg;
    addError(std::move(reason));
    --depth_;
  }

  // Records a violation; false means "stop now" (boolean mode).
  bool violation(bool collect, bool* ok, std::string reason) {
    *ok = false;
    if (collect) addError(std::move(reason));
    return collect && !stop_;
  }

  // Folds a sub-result; false means "stop now".
  bool merge(bool sub_ok, bool collect, bool* ok) const {
    if (sub_ok) return true;
    *ok = false;
    return collect && !stop_ && !aborted_;
  }

  bool abort(std::string reason) {
    if (!aborted_) {
      aborted_ = true;
      abort_reason_ = std::move(reason);
      abort_pointer_ = pointer();
    }
    return false;
  }

  bool step(std::uint64_t n = 1) {
    steps_ += n;
    if (steps_ <= budget_) return true;
    if (!budget_sized_) {
      // The budget scales with the instance: large legitimate bodies get room, while a hostile
      // schema (exponential anyOf nesting, cyclic refs) on a small body is cut off quickly.
      budget_sized_ = true;
      budget_ += kStepsPerInstanceNode * countNodes(root_);
      if (steps_ <= budget_) return true;
    }
    return abort("validation aborted: the schema is too complex to evaluate for this input");
  }

  static std::uint64_t countNodes(const Value& v) {
    std::uint64_t n = 0;
    std::vector<const Value*> stack{&v};
    while (!stack.empty()) {
      const Value* cur = stack.back();
      stack.pop_back();
      ++n;
      if (cur->IsArray()) {
        for (const auto& e : cur->GetArray()) stack.push_back(&e);
      } else if (cur->IsObject()) {
        for (auto m = cur->MemberBegin(); m != cur->MemberEnd(); ++m) stack.push_back(&m->value);
      }
    }
    return n;
  }

  // ---- equality (iterative: instance values may be arbitrarily deep)
  bool deepEqual(const Value& a, const Value& b) {
    if (!a.IsArray() && !a.IsObject()) return scalarEqual(a, b);
    if (a.GetType() != b.GetType()) return false;
    std::vector<std::pair<const Value*, const Value*>> stack{{&a, &b}};
    while (!stack.empty()) {
      auto [x, y] = stack.back();
      stack.pop_back();
      if (!step()) return false;
      if (x->IsArray()) {
        if (!y->IsArray() || x->Size() != y->Size()) return false;
        for (SizeType i = 0; i < x->Size(); ++i) stack.push_back({&(*x)[i], &(*y)[i]});
      } else if (x->IsObject()) {
        if (!y->IsObject() || x->MemberCount() != y->MemberCount()) return false;
        for (auto m = x->MemberBegin(); m != x->MemberEnd(); ++m) {
          if (!step(1 + y->MemberCount() / 16)) return false;  // FindMember is linear
          const auto other = y->FindMember(m->name);
          if (other == y->MemberEnd()) return false;
          stack.push_back({&m->value, &other->value});
        }
      } else if (!scalarEqual(*x, *y)) {
        return false;
      }
    }
    return true;
  }

  // FindMember is a linear scan of the instance object: charge it to the budget.
  bool hasMember(const Value& object, const std::string& name) {
    if (!step(1 + object.MemberCount() / 16)) return false;
    return object.FindMember(Value(rapidjson::StringRef(name.data(), static_cast<SizeType>(name.size())))) !=
           object.MemberEnd();
  }

  bool enumContains(const Node& n, const Value& v) {
    const ValueKeywords& val = n.values();
    if (v.IsString() && !val.enum_strings.empty()) {
      return val.enum_strings.count(std::string_view(v.GetString(), v.GetStringLength())) > 0;
    }
    if (!v.IsString() && val.enum_only_strings) return false;
    if (!step(1 + val.enum_values.size() / 8)) return false;  // a linear scan: charge it
    for (const Value* e : val.enum_values) {
      if (deepEqual(v, *e)) return true;
      if (aborted_) return false;
    }
    return false;
  }

  // ---- the evaluation
  bool descend(const Node& n, const Value& child, const Segment& seg, bool collect) {
    if (n.kind == Node::Kind::kTrue) return true;
    path_[depth_++] = seg;
    bool ok = false;
    if (depth_ > kMaxJsonDepth) {
      if (collect) addError("nested deeper than " + std::to_string(kMaxJsonDepth) + " levels, which is not accepted");
    } else {
      ok = check(n, child, collect);
    }
    --depth_;
    return ok;
  }

  bool check(const Node& n, const Value& v, bool collect) {
    if (stop_ || aborted_) return false;
    if (!step()) return false;
    if (n.kind != Node::Kind::kSchema) {
      if (n.kind == Node::Kind::kTrue) return true;
      if (collect) addError("no value is allowed here");
      return false;
    }
    if (!n.unenforced.empty()) {
      if (collect) addError("cannot be validated: " + n.unenforced.front());
      return false;
    }
    if (n.nullable && v.IsNull()) return true;
    const std::uint8_t itypes = instanceTypes(v);
    if (n.has_types && (n.types & itypes) == 0) {
      if (collect) {
        addError("expected " + typeList(static_cast<std::uint8_t>(n.types | (n.nullable ? kTNull : 0))) + ", got " +
                 instanceTypeName(v));
      }
      return false;
    }
    if (eval_depth_ >= kMaxEvalDepth) {
      return abort("validation aborted: schema references nest too deeply (a $ref cycle that never reaches a value?)");
    }
    ++eval_depth_;
    const bool ok = checkKeywords(n, v, itypes, collect);
    --eval_depth_;
    return ok && !aborted_;
  }

  bool checkKeywords(const Node& n, const Value& v, std::uint8_t itypes, bool collect) {
    bool ok = true;
    if (n.ref != nullptr && !merge(check(*n.ref, v, collect), collect, &ok)) return false;
    if ((itypes & kTNumber) != 0 && n.number_keywords && !checkNumber(n, v, collect, &ok)) return false;
    if ((itypes & kTString) != 0 && n.string_keywords && !checkString(n, v, collect, &ok)) return false;
    if ((itypes & kTArray) != 0 && n.array_keywords && !checkArray(n, v, collect, &ok)) return false;
    if ((itypes & kTObject) != 0 && n.object_keywords && !checkObject(n, v, collect, &ok)) return false;
    if (n.value_group.present()) {
      const ValueKeywords& val = n.values();
      if (val.has_enum && !enumContains(n, v)) {
        if (aborted_ || !violation(collect, &ok, val.enum_message)) return false;
      }
      if (val.const_value != nullptr && !deepEqual(v, *val.const_value)) {
        if (aborted_ || !violation(collect, &ok, val.const_message)) return false;
      }
    }
    if (n.combinator_keywords && !checkCombinators(n, v, collect, &ok)) return false;
    return ok;
  }

  bool checkNumber(const Node& n, const Value& v, bool collect, bool* ok) {
    const NumberKeywords& num = n.numbers();
    const Num x = Num::of(v);
    for (const Bound& b : num.lower) {
      const int c = compareNum(x, b.value);
      if ((c < 0 || (c == 0 && b.exclusive)) && !violation(collect, ok, b.message)) return false;
    }
    for (const Bound& b : num.upper) {
      const int c = compareNum(x, b.value);
      if ((c > 0 || (c == 0 && b.exclusive)) && !violation(collect, ok, b.message)) return false;
    }
    if (num.multiple_of && !isMultipleOf(x, *num.multiple_of) && !violation(collect, ok, num.multiple_of_message)) {
      return false;
    }
    if (!checkNumberFormat(n.format, v) && !violation(collect, ok, n.format_message)) return false;
    return true;
  }

  bool checkString(const Node& n, const Value& v, bool collect, bool* ok) {
    const StringKeywords& str = n.strings();
    const std::string_view s(v.GetString(), v.GetStringLength());
    if (str.min_length || str.max_length) {
      const std::size_t length = utf8Length(s.data(), s.size());
      if (str.min_length && length < *str.min_length &&
          !violation(collect, ok, "must be at least " + plural(*str.min_length, "character", "characters") + " long")) {
        return false;
      }
      if (str.max_length && length > *str.max_length &&
          !violation(collect, ok, "must be at most " + plural(*str.max_length, "character", "characters") + " long")) {
        return false;
      }
    }
    if (str.pattern) {
      if (!step(1 + s.size() / 64)) return false;
      if (!str.pattern->matches(s) && !violation(collect, ok, str.pattern_message)) return false;
    }
    if (n.format != Format::kNone) {
      if (n.format == Format::kRegex && !step(1 + s.size())) return false;
      if (!checkStringFormat(n.format, s) && !violation(collect, ok, n.format_message)) return false;
    }
    return true;
  }

  bool checkArray(const Node& n, const Value& v, bool collect, bool* ok) {
    const ArrayKeywords& arr = n.arrays();
    const SizeType size = v.Size();
    if (arr.min_items && size < *arr.min_items &&
        !violation(collect, ok, "must have at least " + plural(*arr.min_items, "item", "items"))) {
      return false;
    }
    if (arr.max_items && size > *arr.max_items &&
        !violation(collect, ok, "must have at most " + plural(*arr.max_items, "item", "items"))) {
      return false;
    }
    for (SizeType i = 0; i < size; ++i) {
      const Node* child = i < arr.prefix_items.size() ? arr.prefix_items[i] : arr.items;
      if (child == nullptr) break;
      Segment seg;
      seg.is_index = true;
      seg.index = i;
      if (child->kind == Node::Kind::kFalse) {
        *ok = false;
        if (!collect) return false;
        addErrorAt(seg,
                   "unexpected item: at most " + plural(arr.prefix_items.size(), "item is", "items are") + " allowed");
        if (stop_) return false;
        continue;
      }
      if (!merge(descend(*child, v[i], seg, collect), collect, ok)) return false;
    }
    if (arr.unique_items && size > 1 && !checkUnique(v, collect, ok)) return false;
    if (arr.contains != nullptr) {
      const std::uint64_t min = arr.min_contains.value_or(1);
      std::uint64_t matches = 0;
      for (SizeType i = 0; i < size; ++i) {
        Segment seg;
        seg.is_index = true;
        seg.index = i;
        if (descend(*arr.contains, v[i], seg, false)) ++matches;
        if (aborted_) return false;
        if (!arr.max_contains && matches >= min) break;
      }
      if (matches < min &&
          !violation(collect, ok, "must contain at least " + plural(min, "item", "items") + " matching \"contains\"")) {
        return false;
      }
      if (arr.max_contains && matches > *arr.max_contains &&
          !violation(collect, ok,
                     "must contain at most " + plural(*arr.max_contains, "item", "items") + " matching \"contains\"")) {
        return false;
      }
    }
    return true;
  }

  bool checkUnique(const Value& v, bool collect, bool* ok) {
    std::vector<std::pair<std::uint64_t, SizeType>> hashes;
    hashes.reserve(v.Size());
    std::uint64_t hash_steps = 0;
    for (SizeType i = 0; i < v.Size(); ++i) hashes.emplace_back(hashValue(v[i], 0, &hash_steps), i);
    if (!step(hash_steps)) return false;
    std::sort(hashes.begin(), hashes.end());
    // Equal values hash equal, so only runs of one hash need comparing. The first equal pair
    // found is reported; every comparison is charged, so hash collisions cannot go quadratic
    // unbounded.
    SizeType first = 0;
    SizeType second = 0;
    bool duplicate = false;
    for (std::size_t run = 0; run < hashes.size() && !duplicate;) {
      std::size_t end = run + 1;
      while (end < hashes.size() && hashes[end].first == hashes[run].first) ++end;
      for (std::size_t a = run; a < end && !duplicate; ++a) {
        for (std::size_t b = a + 1; b < end; ++b) {
          if (!step()) return false;
          const SizeType i = std::min(hashes[a].second, hashes[b].second);
          const SizeType j = std::max(hashes[a].second, hashes[b].second);
          if (deepEqual(v[i], v[j])) {
            duplicate = true;
            first = i;
            second = j;
            break;
          }
          if (aborted_) return false;
        }
      }
      run = end;
    }
    if (duplicate && !violation(collect, ok,
                                "items must be unique (items " + std::to_string(first) + " and " +
                                    std::to_string(second) + " are equal)")) {
      return false;
    }
    return true;
  }

  bool checkObject(const Node& n, const Value& v, bool collect, bool* ok) {
    const ObjectKeywords& obj = n.objects();
    const SizeType count = v.MemberCount();
    if (obj.min_properties && count < *obj.min_properties &&
        !violation(collect, ok, "must have at least " + plural(*obj.min_properties, "property", "properties"))) {
      return false;
    }
    if (obj.max_properties && count > *obj.max_properties &&
        !violation(collect, ok, "must have at most " + plural(*obj.max_properties, "property", "properties"))) {
      return false;
    }
    // Which declared properties are present, for "required" (no allocation up to 256 properties).
    std::array<std::uint64_t, 4> seen{};
    const bool track = obj.properties.size() <= 256;
    for (auto m = v.MemberBegin(); m != v.MemberEnd(); ++m) {
      if (stop_ || aborted_) return false;
      const std::string_view name(m->name.GetString(), m->name.GetStringLength());
      Segment seg;
      seg.name = name.data();
      seg.length = static_cast<SizeType>(name.size());
      bool matched = false;
      if (!obj.properties.empty()) {
        const int idx = obj.findProperty(name);
        if (idx >= 0) {
          matched = true;
          if (track) seen[static_cast<std::size_t>(idx) / 64] |= std::uint64_t{1} << (idx % 64);
          if (!merge(descend(*obj.properties[static_cast<std::size_t>(idx)].schema, m->value, seg, collect), collect,
                     ok)) {
            return false;
          }
        }
      }
      for (const PatternProperty& pp : obj.pattern_properties) {
        if (!step(1 + name.size() / 64)) return false;
        if (pp.pattern->matches(name)) {
          matched = true;
          if (!merge(descend(*pp.schema, m->value, seg, collect), collect, ok)) return false;
        }
      }
      if (!matched && obj.additional_properties != nullptr) {
        if (obj.additional_properties->kind == Node::Kind::kFalse) {
          *ok = false;
          if (!collect) return false;
          addErrorAt(seg, "unexpected property");
        } else if (!merge(descend(*obj.additional_properties, m->value, seg, collect), collect, ok)) {
          return false;
        }
      }
      if (obj.property_names != nullptr) {
        const std::size_t before = out_ == nullptr ? 0 : out_->size();
        const bool name_ok = descend(*obj.property_names, m->name, seg, collect);
        if (collect && out_ != nullptr) {
          for (std::size_t i = before; i < out_->size(); ++i) {
            if (stop_ && i + 1 == out_->size()) continue;  // the "too many violations" summary
            (*out_)[i].reason = "property name " + (*out_)[i].reason;
          }
        }
        if (!merge(name_ok, collect, ok)) return false;
      }
    }
    for (const Required& r : obj.required) {
      bool present = false;
      if (track && r.property_index >= 0) {
        present = (seen[static_cast<std::size_t>(r.property_index) / 64] >> (r.property_index % 64)) & 1U;
      } else {
        present = hasMember(v, r.name);
        if (aborted_) return false;
      }
      if (!present) {
        *ok = false;
        if (!collect) return false;
        Segment seg;
        seg.name = r.name.data();
        seg.length = static_cast<SizeType>(r.name.size());
        addErrorAt(seg, "required property is missing");
        if (stop_) return false;
      }
    }
    for (const DependentRequired& d : obj.dependent_required) {
      if (!hasMember(v, d.name)) {
        if (aborted_) return false;
        continue;
      }
      for (const std::string& r : d.required) {
        if (hasMember(v, r)) continue;
        if (aborted_) return false;
        *ok = false;
        if (!collect) return false;
        Segment seg;
        seg.name = r.data();
        seg.length = static_cast<SizeType>(r.size());
        addErrorAt(seg, "required property is missing (required when " + quote(d.name) + " is present)");
        if (stop_) return false;
      }
    }
    for (const DependentSchema& d : obj.dependent_schemas) {
      if (!hasMember(v, d.name)) {
        if (aborted_) return false;
        continue;
      }
      if (!merge(check(*d.schema, v, collect), collect, ok)) return false;
    }
    return true;
  }

  bool checkCombinators(const Node& n, const Value& v, bool collect, bool* ok) {
    const CombinatorKeywords& comb = n.combinators();
    for (const Node* s : comb.all_of) {
      if (!merge(check(*s, v, collect), collect, ok)) return false;
    }
    if (!comb.any_of.empty()) {
      bool any = false;
      for (const Node* s : comb.any_of) {
        if (check(*s, v, false)) {
          any = true;
          break;
        }
        if (aborted_) return false;
      }
      if (!any) {
        *ok = false;
        if (!collect) return false;
        explainNoMatch(comb.any_of, v, false);
        if (stop_ || aborted_) return false;
      }
    }
    if (!comb.one_of.empty()) {
      std::size_t first = 0;
      std::size_t matches = 0;
      std::size_t second = 0;
      for (std::size_t i = 0; i < comb.one_of.size() && matches < 2; ++i) {
        if (check(*comb.one_of[i], v, false)) {
          (matches == 0 ? first : second) = i;
          ++matches;
        }
        if (aborted_) return false;
      }
      if (matches == 0) {
        *ok = false;
        if (!collect) return false;
        explainNoMatch(comb.one_of, v, true);
        if (stop_ || aborted_) return false;
      } else if (matches > 1 &&
                 !violation(collect, ok,
                            "must match exactly one of the oneOf alternatives, but matches alternatives " +
                                std::to_string(first) + " and " + std::to_string(second))) {
        return false;
      }
    }
    if (comb.not_schema != nullptr) {
      const bool matches = check(*comb.not_schema, v, false);
      if (aborted_) return false;
      if (matches && !violation(collect, ok, "must not match the schema in \"not\"")) return false;
    }
    if (comb.if_schema != nullptr) {
      const bool condition = check(*comb.if_schema, v, false);
      if (aborted_) return false;
      const Node* branch = condition ? comb.then_schema : comb.else_schema;
      if (branch != nullptr && !merge(check(*branch, v, collect), collect, ok)) return false;
    }
    return true;
  }

  // The types a subschema can accept, when it constrains them (following refs a few hops).
  std::optional<std::uint8_t> possibleTypes(const Node& n, int hops) const {
    if (n.kind == Node::Kind::kTrue) return std::nullopt;
    if (n.kind == Node::Kind::kFalse) return std::uint8_t{0};
    std::uint8_t mask = kAllTypes;
    bool constrained = false;
    if (n.has_types) {
      mask &= static_cast<std::uint8_t>(n.types | (n.nullable ? kTNull : 0));
      // An "integer" instance is also a "number": a schema of type number accepts both bits.
      if (mask & kTNumber) mask |= kTInteger;
      constrained = true;
    }
    if (n.values().const_value != nullptr) {
      mask &=
          instanceTypes(*n.values().const_value) | (instanceTypes(*n.values().const_value) & kTInteger ? kTNumber : 0);
      constrained = true;
    }
    if (n.values().has_enum) {
      std::uint8_t enum_mask = n.nullable ? kTNull : 0;
      for (const Value* e : n.values().enum_values) enum_mask |= instanceTypes(*e);
      mask &= enum_mask;
      constrained = true;
    }
    if (hops < kMaxCompatHops) {
      if (n.ref != nullptr) {
        if (const auto t = possibleTypes(*n.ref, hops + 1)) {
          mask &= *t;
          constrained = true;
        }
      }
      for (const Node* a : n.combinators().all_of) {
        if (const auto t = possibleTypes(*a, hops + 1)) {
          mask &= *t;
          constrained = true;
        }
      }
    }
    if (!constrained) return std::nullopt;
    return mask;
  }

  // Could `n` be the alternative the caller meant? Its types admit the instance, and for objects
  // every const-valued property present in the instance (a discriminator: "kind": "cat") agrees.
  bool plausible(const Node& n, const Value& v, int hops) {
    if (n.kind != Node::Kind::kSchema) return n.kind == Node::Kind::kTrue;
    if (const auto t = possibleTypes(n, 0)) {
      std::uint8_t itypes = instanceTypes(v);
      if ((*t & itypes) == 0) return false;
    }
    if (hops >= kMaxCompatHops) return true;
    if (n.ref != nullptr && !plausible(*n.ref, v, hops + 1)) return false;
    for (const Node* a : n.combinators().all_of) {
      if (!plausible(*a, v, hops + 1)) return false;
    }
    if (v.IsObject()) {
      for (const Property& p : n.objects().properties) {
        const Node* ps = p.schema;
        for (int k = 0; k < 4 && ps->kind == Node::Kind::kSchema && ps->values().const_value == nullptr &&
                        ps->ref != nullptr && !ps->values().has_enum;
             ++k) {
          ps = ps->ref;
        }
        const Value* expected = ps->values().const_value;
        if (expected == nullptr && ps->values().has_enum && ps->values().enum_values.size() == 1)
          expected = ps->values().enum_values.front();
        if (expected == nullptr) continue;
        if (!step(1 + v.MemberCount() / 16)) return false;
        const auto m = v.FindMember(Value(rapidjson::StringRef(p.name.data(), static_cast<SizeType>(p.name.size()))));
        if (m != v.MemberEnd() && !deepEqual(m->value, *expected)) return false;
      }
    }
    return true;
  }

  // anyOf/oneOf matched nothing: report the one plausible alternative's own violations (for
  // pydantic's Optional[X] = anyOf [X, null] that is X's), else a summary.
  void explainNoMatch(const std::vector<const Node*>& alternatives, const Value& v, bool one_of) {
    const Node* candidate = nullptr;
    std::size_t candidates = 0;
    for (const Node* a : alternatives) {
      if (plausible(*a, v, 0)) {
        candidate = a;
        ++candidates;
      }
      if (aborted_) return;
    }
    if (candidates == 1 && candidate != nullptr) {
      const std::size_t before = out_->size();
      check(*candidate, v, true);
      if (out_->size() > before || stop_ || aborted_) return;
    }
    std::uint8_t mask = 0;
    bool known = true;
    for (const Node* a : alternatives) {
      const auto t = possibleTypes(*a, 0);
      if (!t) {
        known = false;
        break;
      }
      mask |= *t;
    }
    if (known && (mask & instanceTypes(v)) == 0) {
      addError("expected " + typeList(mask) + ", got " + instanceTypeName(v));
    } else {
      addError(std::string("must match ") + (one_of ? "exactly one of the oneOf" : "at least one of the anyOf") +
               " alternatives (" + std::to_string(alternatives.size()) + ")");
    }
  }

  const CompiledSchema::Impl& schema_;
  const Value& root_;
  std::vector<ErrorDetail>* out_;
  std::size_t max_;
  std::array<Segment, kMaxJsonDepth + 2> path_{};
  std::size_t depth_ = 0;
  std::size_t eval_depth_ = 0;
  std::uint64_t steps_ = 0;
  std::uint64_t budget_ = kBaseBudget;
  bool budget_sized_ = false;
  bool stop_ = false;
  bool aborted_ = false;
  std::string abort_reason_;
  std::string abort_pointer_;
};

}  // namespace

Result<std::shared_ptr<const CompiledSchema>> compileSchema(const rapidjson::Value& schema,
                                                            std::vector<SchemaIssue>* issues) {
  return compileSchema(schema, SchemaCompileOptions{}, issues);
}

Result<std::shared_ptr<const CompiledSchema>> compileSchema(const rapidjson::Value& schema,
                                                            const SchemaCompileOptions& options,
                                                            std::vector<SchemaIssue>* issues) {
  if (!schema.IsObject() && !schema.IsBool()) {
    return Error::make(ErrorCode::kInvalidParameters, "a JSON Schema must be an object or a boolean");
  }
  auto impl = std::make_unique<CompiledSchema::Impl>();
  try {
    Compiler compiler(options, impl.get());
    compiler.compile(schema);
  } catch (const std::exception& e) {  // only allocation failures can get here
    return Error::make(ErrorCode::kInternal, std::string("schema compilation failed: ") + e.what());
  }
  if (issues != nullptr) issues->insert(issues->end(), impl->issues.begin(), impl->issues.end());
  return std::shared_ptr<const CompiledSchema>(std::make_shared<const CompiledSchema>(std::move(impl)));
}

std::vector<ErrorDetail> validate(const CompiledSchema& schema, const rapidjson::Value& instance) {
  return validate(schema, instance, kMaxSchemaViolations);
}

std::vector<ErrorDetail> validate(const CompiledSchema& schema, const rapidjson::Value& instance,
                                  std::size_t max_violations) {
  std::vector<ErrorDetail> out;
  Validator validator(schema.impl(), instance, &out, max_violations);
  validator.run();
  return out;
}

bool isValid(const CompiledSchema& schema, const rapidjson::Value& instance) {
  Validator validator(schema.impl(), instance, nullptr, 1);
  return validator.run();
}

Status parseJsonText(std::string_view text, rapidjson::Document* doc) {
  static const char kEmpty[] = "";
  const char* data = text.data() != nullptr ? text.data() : kEmpty;
  doc->Parse<rapidjson::kParseIterativeFlag | rapidjson::kParseValidateEncodingFlag>(data, text.size());
  if (doc->HasParseError()) {
    return Error::make(ErrorCode::kBadRequest, std::string("not valid JSON: ") +
                                                   rapidjson::GetParseError_En(doc->GetParseError()) + " (at byte " +
                                                   std::to_string(doc->GetErrorOffset()) + ")");
  }
  return okStatus();
}

}  // namespace keyway::core
