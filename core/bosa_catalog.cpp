// Parsing of BOSA's discovery document into BosaCatalog: action filtering, schema selection, compilation.
#include "core/bosa_catalog.hpp"

#include <rapidjson/document.h>

#include <array>
#include <utility>

#include "core/text.hpp"

namespace keyway::core {

namespace {

using rapidjson::Value;

// Endpoints the SDK never treats as actions (docs/bosa.md).
constexpr std::array<std::string_view, 3> kNonActionPrefixes = {"integrations", "integration-exists",
                                                                "success-authorize-callback"};

bool isNonActionKey(std::string_view key) {
  for (std::string_view prefix : kNonActionPrefixes) {
    if (key.substr(0, prefix.size()) == prefix) return true;
  }
  return false;
}

std::string_view view(const Value& v) {
  return std::string_view(v.GetString(), v.GetStringLength());
}

const Value* member(const Value& obj, const char* name) {
  if (!obj.IsObject()) return nullptr;
  const auto it = obj.FindMember(name);
  return it == obj.MemberEnd() ? nullptr : &it->value;
}

// Python truthiness, as the SDK tests `if parameters.request:`.
bool truthy(const Value& v) {
  if (v.IsNull() || v.IsFalse()) return false;
  if (v.IsObject()) return v.MemberCount() > 0;
  if (v.IsArray()) return !v.Empty();
  if (v.IsString()) return v.GetStringLength() > 0;
  if (v.IsNumber()) return v.GetDouble() != 0;
  return true;
}

const std::shared_ptr<const CompiledSchema>& anyObjectSchema() {
  static const std::shared_ptr<const CompiledSchema> schema = [] {
    rapidjson::Document doc;
    doc.Parse(R"({"type":"object"})");
    return compileSchema(doc, nullptr).value();
  }();
  return schema;
}

}  // namespace

Result<std::shared_ptr<const BosaCatalog>> BosaCatalog::parse(std::string_view json, UnenforcedPolicy policy) {
  rapidjson::Document doc;
  const Status parsed = parseJsonText(json, &doc);
  if (!parsed.ok()) {
    return Error::make(ErrorCode::kBadRequest, "BOSA discovery document: " + parsed.error().message);
  }
  if (!doc.IsObject()) {
    return Error::make(ErrorCode::kBadRequest, "BOSA discovery document is not a JSON object");
  }
  auto catalog = std::make_shared<BosaCatalog>();
  SchemaCompileOptions options;
  options.unenforced = policy;
  options.pattern_cache = makePatternCache();  // actions repeat the same patterns

  for (auto c = doc.MemberBegin(); c != doc.MemberEnd(); ++c) {
    const std::string connector_name(view(c->name));
    if (!c->value.IsObject()) {
      catalog->problems_.push_back({connector_name, "", "connector entry is not an object; skipped"});
      continue;
    }
    if (catalog->connectors_.count(connector_name) != 0) {
      catalog->problems_.push_back({connector_name, "", "duplicate connector key; the first one is used"});
      continue;
    }
    BosaConnector& connector = catalog->connectors_[connector_name];
    connector.name = connector_name;
    std::string connector_ptr;
    appendPointerToken(&connector_ptr, connector_name);

    for (auto a = c->value.MemberBegin(); a != c->value.MemberEnd(); ++a) {
      const std::string action_name(view(a->name));
      auto problem = [&](std::string message) {
        catalog->problems_.push_back({connector_name, action_name, std::move(message)});
      };
      if (!a->value.IsObject()) {
        problem("endpoint entry is not an object; skipped");
        continue;
      }
      const Value* method = member(a->value, "method");
      if (method == nullptr || !method->IsString()) {
        problem("endpoint has no string \"method\"; skipped");
        continue;
      }
      // Exactly the SDK's rule: only "POST" entries outside the integration routes are actions.
      if (view(*method) != "POST" || isNonActionKey(action_name)) continue;
      if (connector.actions.count(action_name) != 0) {
        problem("duplicate action key; the first one is used");
        continue;
      }
      const Value* path = member(a->value, "path");
      if (path == nullptr || !path->IsString() || path->GetStringLength() == 0 || path->GetString()[0] != '/') {
        problem("action has no \"path\" starting with '/'; skipped");
        continue;
      }

      std::string action_ptr = connector_ptr;
      appendPointerToken(&action_ptr, action_name);
      const Value* schema = nullptr;
      std::string schema_ptr;
      const Value* request_body = member(a->value, "request_body");
      if (request_body != nullptr && !request_body->IsNull() && !request_body->IsObject()) {
        problem("\"request_body\" is neither an object nor null; skipped");
        continue;
      }
      if (request_body != nullptr && request_body->IsObject() && request_body->MemberCount() > 0) {
        schema = request_body;
        schema_ptr = action_ptr + "/request_body";
      } else {
        const Value* parameters = member(a->value, "parameters");
        const Value* request = parameters != nullptr ? member(*parameters, "request") : nullptr;
        if (parameters != nullptr && !parameters->IsObject() && !parameters->IsNull()) {
          problem("\"parameters\" is not an object; skipped");
          continue;
        }
        if (request != nullptr && truthy(*request)) {
          const Value* request_schema = member(*request, "schema");
          if (request_schema == nullptr || !request_schema->IsObject()) {
            problem("\"parameters.request\" has no \"schema\" object; skipped");
            continue;
          }
          schema = request_schema;
          schema_ptr = action_ptr + "/parameters/request/schema";
        }
      }

      BosaAction action;
      action.name = action_name;
      action.method = "POST";
      action.path = std::string(view(*path));
      if (schema == nullptr) {
        action.schema = anyObjectSchema();
      } else {
        std::vector<SchemaIssue> issues;
        auto compiled = compileSchema(*schema, options, &issues);
        if (!compiled.ok()) {
          problem("schema does not compile: " + compiled.error().message + "; skipped");
          continue;
        }
        action.schema = std::move(compiled).value();
        for (auto& issue : issues) {
          issue.schema_pointer = schema_ptr + issue.schema_pointer;
          action.issues.push_back(std::move(issue));
        }
      }
      action.has_binary_fields = action.schema->hasBinaryFields();
      catalog->issue_count_ += action.issues.size();
      ++catalog->action_count_;
      connector.actions.emplace(action_name, std::move(action));
    }
  }
  return std::shared_ptr<const BosaCatalog>(std::move(catalog));
}

const BosaConnector* BosaCatalog::connector(std::string_view name) const {
  const auto it = connectors_.find(name);
  return it == connectors_.end() ? nullptr : &it->second;
}

const BosaAction* BosaCatalog::find(std::string_view connector_name, std::string_view action) const {
  const BosaConnector* c = connector(connector_name);
  if (c == nullptr) return nullptr;
  const auto it = c->actions.find(action);
  return it == c->actions.end() ? nullptr : &it->second;
}

std::vector<std::string> BosaCatalog::actionNames(std::string_view connector_name) const {
  std::vector<std::string> names;
  if (const BosaConnector* c = connector(connector_name)) {
    names.reserve(c->actions.size());
    for (const auto& entry : c->actions) names.push_back(entry.first);
  }
  return names;
}

std::vector<std::string> BosaCatalog::connectorNames() const {
  std::vector<std::string> names;
  names.reserve(connectors_.size());
  for (const auto& entry : connectors_) names.push_back(entry.first);
  return names;
}

}  // namespace keyway::core
