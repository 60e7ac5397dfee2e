// CompiledSchema's accessors (core/json_schema.hpp) over the graph in graph.hpp.
#include "core/json_schema/graph.hpp"

#include <utility>

namespace keyway::core {

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

}  // namespace keyway::core
