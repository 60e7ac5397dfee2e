// BOSA's discovery document (GET /connectors) parsed into an immutable catalog of actions with compiled schemas.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/json_schema.hpp"
#include "core/result.hpp"

namespace keyway::core {

// One action (docs/bosa.md): an entry with method "POST" whose key does not start with
// "integrations", "integration-exists" or "success-authorize-callback".
struct BosaAction {
  std::string name;    // the entry's key, e.g. "list_pull_requests"
  std::string method;  // always "POST" for an action
  std::string path;    // as the upstream sent it, e.g. "/connectors/github/list_pull_requests"
  // request_body (with its $defs) when present and non-empty, else parameters.request.schema, else
  // {"type":"object"} (an action without a declared schema still takes a JSON object). Never null.
  std::shared_ptr<const CompiledSchema> schema;
  // Constructs of that schema keyway does not enforce. schema_pointer is a pointer into the whole
  // discovery document, e.g. "/github/list_pull_requests/request_body/properties/repo/pattern".
  std::vector<SchemaIssue> issues;
  bool has_binary_fields = false;  // some field is {"type":"string","format":"binary"} (file upload)
};

struct BosaConnector {
  std::string name;
  std::map<std::string, BosaAction, std::less<>> actions;
};

// An entry that was skipped (malformed) or a document-level oddity (duplicate key). Never fatal.
struct CatalogProblem {
  std::string connector;
  std::string action;  // empty for a connector-level problem
  std::string message;
};

// Immutable after parse(); share it across threads freely (all members are const).
class BosaCatalog {
 public:
  // Parses the bytes of a discovery document: a JSON object keyed by connector name, each an object
  // keyed by endpoint name. Fails (kBadRequest) only when the text is not JSON or not an object;
  // a malformed connector or action is skipped and listed in problems(). Each action's schema is
  // compiled once here. Iterative parser: any nesting depth is safe.
  static Result<std::shared_ptr<const BosaCatalog>> parse(std::string_view json,
                                                          UnenforcedPolicy policy = UnenforcedPolicy::kReport);

  // The action, or null when the connector or the action is unknown.
  const BosaAction* find(std::string_view connector, std::string_view action) const;
  // The connector, or null.
  const BosaConnector* connector(std::string_view name) const;
  // Sorted action names of a connector (for the 404 listing); empty when the connector is unknown.
  std::vector<std::string> actionNames(std::string_view connector) const;
  // Sorted connector names (every object-valued top-level key, even one with no actions).
  std::vector<std::string> connectorNames() const;

  const std::vector<CatalogProblem>& problems() const { return problems_; }
  std::size_t actionCount() const { return action_count_; }
  // Total schema issues over all actions (for a metric or `keywayctl schemas list`).
  std::size_t issueCount() const { return issue_count_; }

 private:
  std::map<std::string, BosaConnector, std::less<>> connectors_;
  std::vector<CatalogProblem> problems_;
  std::size_t action_count_ = 0;
  std::size_t issue_count_ = 0;
};

}  // namespace keyway::core
