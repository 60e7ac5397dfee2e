// "$ref" resolution: the "$id"/"$anchor" index and JSON-pointer walks through the indexed documents.
#include "core/json_schema/refs.hpp"

#include <algorithm>
#include <string_view>

#include "core/json_schema/keywords.hpp"
#include "core/json_schema/uri.hpp"

namespace keyway::core::json_schema {

void RefIndex::build(const Value& root, const SchemaCompileOptions& options, bool draft4) {
  draft4_ = draft4;
  ids_[stripEmptyFragment(withoutFragment(options.base_uri))] = Location{&root, "", options.base_uri};
  scan(root, "", options.base_uri, 0);
  for (const auto& [uri, doc] : options.documents) {
    if (doc == nullptr) continue;
    const std::string key = stripEmptyFragment(withoutFragment(uri));
    if (ids_.count(key) == 0) ids_[key] = Location{doc, key + "#", key};
    scan(*doc, key + "#", key, 0);
  }
}

std::string RefIndex::idOf(const Value& v) const {
  if (!v.IsObject()) return {};
  const auto it = v.FindMember(draft4_ ? "id" : "$id");
  if (it == v.MemberEnd() || !it->value.IsString()) return {};
  return std::string(it->value.GetString(), it->value.GetStringLength());
}

std::string RefIndex::baseInside(const Value& v, const std::string& parent_base) const {
  const std::string id = idOf(v);
  if (id.empty() || id[0] == '#') return parent_base;
  return resolveUri(parent_base, id);
}

void RefIndex::scan(const Value& v, const std::string& pointer, const std::string& parent_base, std::size_t depth) {
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
    const auto kw = keywordNamed(key);
    if (!kw) continue;
    switch (*kw) {
      case Keyword::kProperties:
      case Keyword::kPatternProperties:
      case Keyword::kDefinitions:
      case Keyword::kDependentSchemas:
      case Keyword::kDependencies:
        if (m->value.IsObject()) {
          for (auto s = m->value.MemberBegin(); s != m->value.MemberEnd(); ++s) {
            scan(s->value, childPointer(child, std::string_view(s->name.GetString(), s->name.GetStringLength())), base,
                 depth + 1);
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
            scan(m->value[i], childPointer(child, i), base, depth + 1);
        } else {
          scan(m->value, child, base, depth + 1);
        }
        break;
      case Keyword::kAdditionalItems:
      case Keyword::kAdditionalProperties:
      case Keyword::kContains:
      case Keyword::kPropertyNames:
      case Keyword::kNot:
      case Keyword::kIf:
      case Keyword::kThen:
      case Keyword::kElse: scan(m->value, child, base, depth + 1); break;
      default: break;
    }
  }
}

std::optional<Location> RefIndex::resolve(const std::string& ref, const std::string& base, std::string* why) const {
  const std::string absolute = resolveUri(base, ref);
  const std::size_t hash = absolute.find('#');
  const std::string doc = absolute.substr(0, hash);
  const std::string fragment = hash == std::string::npos ? std::string() : percentDecodeOnce(absolute.substr(hash + 1));
  const auto loc = ids_.find(doc);
  if (loc == ids_.end()) {
    *why = "remote $ref " + quote(ref) + " is not resolved (keyway never fetches schemas)";
    return std::nullopt;
  }
  if (fragment.empty()) return loc->second;
  if (fragment[0] != '/') {
    const auto anchor = ids_.find(doc + "#" + fragment);
    if (anchor == ids_.end()) {
      *why = "$ref " + quote(ref) + " names an unknown anchor";
      return std::nullopt;
    }
    return anchor->second;
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
      *why = "$ref " + quote(ref) + " does not resolve to anything in the document";
      return std::nullopt;
    }
    cur = next;
    if (e >= fragment.size()) break;
    i = e + 1;
  }
  return Location{cur, loc->second.pointer + fragment, cur_base};
}

}  // namespace keyway::core::json_schema
