// The generic half of reading keyway's YAML config: mappings walked with unknown and duplicate
// keys refused, typed value readers, and errors that name the file, line and dotted key. The
// sections themselves (which keys exist, what they mean) are in yaml_config_loader.cpp.
#pragma once

#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/config.hpp"
#include "core/result.hpp"

namespace keyway::daemon::yaml_fields {

using core::Error;
using core::ErrorCode;
using core::Status;
using std::chrono::milliseconds;

// One key/value pair of a mapping, as handed to the function that parses that key.
struct Entry {
  YAML::Node key;
  YAML::Node value;
  std::string path;    // dotted, e.g. "upstreams.bosa.base_url"
  int key_line = 0;    // 1-based
  int value_line = 0;  // 1-based; the key's line when the value has no position (empty value)
};

using FieldParser = std::function<Status(const Entry&)>;

// A key a mapping accepts and how to parse its value. A section's list of fields is also its
// list of allowed keys: adding a key is adding one Field.
struct Field {
  const char* name;
  FieldParser parse;
};

// Turns problems into "<source>:<line>: <path>: <what>" errors.
class Ctx {
 public:
  explicit Ctx(std::string_view source) : source_(source) {}

  Error error(int line, const std::string& path, const std::string& what) const {
    std::string message = source_ + ":" + std::to_string(line) + ": ";
    if (!path.empty()) message += path + ": ";
    message += what;
    return Error::make(ErrorCode::kBadRequest, std::move(message));
  }
  Error error(const Entry& at, const std::string& what) const {
    return error(at.value_line, at.path, what);
  }
  // The file being read (or a <name> for text that is not one).
  const std::string& source() const { return source_; }

 private:
  std::string source_;
};

int lineOf(const YAML::Node& node, int fallback);
// "a string", "a list", "a mapping" or "nothing": what a node is, for error messages.
std::string describe(const YAML::Node& node);
// 64KiB, 10MiB, 1GiB or N bytes; 10s, 5m, 2h or N ms: limits as a user would write them.
std::string formatSize(uint64_t bytes);
std::string formatDuration(std::chrono::milliseconds ms);

// Checks that `node` is a mapping with unique string keys and calls `each` for every entry in
// file order. `allow_null` treats an empty value (`server:` with every sub-key commented out)
// as an empty mapping.
Status walkMap(const Ctx& ctx, const YAML::Node& node, const std::string& path, int line,
               bool allow_null, const FieldParser& each);

// walkMap over the value of `section`, restricted to `fields`: any other key is an error
// listing the accepted ones.
Status parseMap(const Ctx& ctx, const Entry& section, bool allow_null,
                const std::vector<Field>& fields);

Status readScalar(const Ctx& ctx, const Entry& e, const char* expected, std::string& out);

// Integers and booleans must be written plain: a quoted "8" is a string in YAML, and accepting
// it would make `threads: "8"` and `threads: 8` mean the same by accident.
Status readPlainScalar(const Ctx& ctx, const Entry& e, const char* expected, const char* yaml_tag,
                       std::string& out);

// A string that may be empty; `null_is_empty` lets `key:` (no value) mean "".
Status readString(const Ctx& ctx, const Entry& e, bool null_is_empty, std::string& out);

Status readBool(const Ctx& ctx, const Entry& e, bool& out);

Status readCount(const Ctx& ctx, const Entry& e, uint64_t min, uint64_t max, size_t& out);

Status readSize(const Ctx& ctx, const Entry& e, uint64_t min, uint64_t max, size_t& out);

Status readDuration(const Ctx& ctx, const Entry& e, milliseconds min, milliseconds max,
                    milliseconds& out);

Status readListen(const Ctx& ctx, const Entry& e, bool allow_empty, core::ListenAddress& out);

// Applies a core check (which says what is wrong without a location) at `e`.
Status check(const Ctx& ctx, const Entry& e, const Status& status);

}  // namespace keyway::daemon::yaml_fields
