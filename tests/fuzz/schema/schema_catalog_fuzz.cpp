// libFuzzer target: BosaCatalog::parse (core/bosa_catalog) on arbitrary discovery documents, then lookups and
// validation.
#include <rapidjson/document.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "core/bosa_catalog.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace keyway::core;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  auto parsed = BosaCatalog::parse(input, size % 2 == 0 ? UnenforcedPolicy::kReport : UnenforcedPolicy::kReject);
  if (!parsed.ok()) return 0;
  const BosaCatalog& catalog = **parsed;

  static const char* const kBodies[] = {R"({})", R"({"owner":"o","repo":"r","page":1,"state":"open"})",
                                        R"({"a":[1,"x",{"b":null}],"file":"Zm9v"})", "[]", "null"};
  std::size_t actions = 0;
  std::size_t checked = 0;
  for (const auto& connector : catalog.connectorNames()) {
    if (catalog.connector(connector) == nullptr) std::abort();
    for (const auto& name : catalog.actionNames(connector)) {
      const BosaAction* action = catalog.find(connector, name);
      if (action == nullptr || action->schema == nullptr || action->method != "POST" || action->path.empty() ||
          action->path[0] != '/') {
        std::fprintf(stderr, "schema_catalog_fuzz: inconsistent action\n");
        std::abort();
      }
      ++actions;
      if (checked++ < 32) {  // bound the work per input
        for (const char* body : kBodies) {
          rapidjson::Document doc;
          if (!parseJsonText(body, &doc).ok()) std::abort();
          const auto violations = validate(*action->schema, doc);
          if (isValid(*action->schema, doc) != violations.empty()) std::abort();
        }
      }
    }
  }
  if (actions != catalog.actionCount()) std::abort();
  return 0;
}
