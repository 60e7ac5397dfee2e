// The compiler: a schema document, with the documents it may reference, into the node graph of graph.hpp.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/json_schema.hpp"
#include "core/json_schema/formats.hpp"
#include "core/json_schema/graph.hpp"
#include "core/json_schema/keywords.hpp"
#include "core/json_schema/refs.hpp"
#include "core/json_schema/regex.hpp"
#include "core/json_schema/uri.hpp"
#include "core/json_schema/values.hpp"

namespace keyway::core {

namespace json_schema {

namespace {

// enum and const values nested deeper than this are not enforced (an issue), so copying and comparing
// them stays bounded.
constexpr std::size_t kMaxValueDepth = 64;

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
    refs_.build(root, options_, draft4_);
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
    std::string why;
    const std::optional<Location> loc = refs_.resolve(ref, base, &why);
    if (!loc) {
      issue(pointer, std::move(why), node);
      return nullptr;
    }
    return nodeFor(loc->value, loc->pointer, loc->parent_base, 0);
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
    const std::string base = refs_.baseInside(v, w.base);
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
      const std::optional<Keyword> kw = keywordNamed(key);
      if (!kw) {
        if (key.size() >= 2 && key[0] == 'x' && key[1] == '-') continue;  // vendor extension: annotation
        issue(ptr, "unknown keyword " + quote(key) + " is not enforced", &n);
        continue;
      }
      switch (*kw) {
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
          (*kw == Keyword::kMaximum ? maximum : minimum) = &val;
          break;
        case Keyword::kExclusiveMaximum:
        case Keyword::kExclusiveMinimum: {
          const bool is_max = *kw == Keyword::kExclusiveMaximum;
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
            const bool as_array = d->value.IsArray() && *kw != Keyword::kDependentSchemas;
            const bool as_schema =
                (d->value.IsObject() || d->value.IsBool()) && *kw != Keyword::kDependentRequired;
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
                        (*kw == Keyword::kDependentRequired ? "arrays of strings" : "schemas"),
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
          auto& list = *kw == Keyword::kAllOf
                           ? n.combinators().all_of
                           : (*kw == Keyword::kAnyOf ? n.combinators().any_of : n.combinators().one_of);
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
  RefIndex refs_;
  std::unordered_map<const Value*, Node*> memo_;
  std::deque<Work> work_;
};

}  // namespace

}  // namespace json_schema

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
    json_schema::Compiler compiler(options, impl.get());
    compiler.compile(schema);
  } catch (const std::exception& e) {  // only allocation failures can get here
    return Error::make(ErrorCode::kInternal, std::string("schema compilation failed: ") + e.what());
  }
  if (issues != nullptr) issues->insert(issues->end(), impl->issues.begin(), impl->issues.end());
  return std::shared_ptr<const CompiledSchema>(std::make_shared<const CompiledSchema>(std::move(impl)));
}

}  // namespace keyway::core
