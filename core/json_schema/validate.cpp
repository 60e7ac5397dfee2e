// The validator: an instance against the graph of graph.hpp, every violation with its pointer and reason.
#include <rapidjson/error/en.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/json_schema.hpp"
#include "core/json_schema/formats.hpp"
#include "core/json_schema/graph.hpp"
#include "core/json_schema/uri.hpp"
#include "core/json_schema/values.hpp"

namespace keyway::core {

namespace json_schema {

namespace {

// Bounds that keep a hostile schema or instance from costing stack or unbounded time.
constexpr std::size_t kMaxEvalDepth = 512;      // nested node evaluations (refs/allOf without progress)
constexpr std::uint64_t kBaseBudget = 4000000;  // evaluation steps before the budget is sized
constexpr std::uint64_t kStepsPerInstanceNode = 64;
constexpr int kMaxCompatHops = 8;  // refs/allOf followed to guess which anyOf/oneOf alternative was meant

// One step of the instance location being checked: a member name or an array index.
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

}  // namespace json_schema

std::vector<ErrorDetail> validate(const CompiledSchema& schema, const rapidjson::Value& instance) {
  return validate(schema, instance, kMaxSchemaViolations);
}

std::vector<ErrorDetail> validate(const CompiledSchema& schema, const rapidjson::Value& instance,
                                  std::size_t max_violations) {
  std::vector<ErrorDetail> out;
  json_schema::Validator validator(schema.impl(), instance, &out, max_violations);
  validator.run();
  return out;
}

bool isValid(const CompiledSchema& schema, const rapidjson::Value& instance) {
  json_schema::Validator validator(schema.impl(), instance, nullptr, 1);
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
