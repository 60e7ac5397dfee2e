// The generic YAML walking and typed value readers of the config loader (see yaml_fields.hpp).
#include "daemon/yaml_fields.hpp"

#include <map>
#include <utility>

#include "core/config_parse.hpp"

namespace keyway::daemon::yaml_fields {

int lineOf(const YAML::Node& node, int fallback) {
  const YAML::Mark mark = node.Mark();
  return mark.is_null() ? fallback : mark.line + 1;
}

std::string describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return "nothing";
    case YAML::NodeType::Scalar:
      return "a string";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a mapping";
  }
  return "something else";
}

std::string formatSize(uint64_t bytes) {
  if (bytes != 0 && bytes % (uint64_t{1} << 30) == 0) return std::to_string(bytes >> 30) + "GiB";
  if (bytes != 0 && bytes % (uint64_t{1} << 20) == 0) return std::to_string(bytes >> 20) + "MiB";
  if (bytes != 0 && bytes % (uint64_t{1} << 10) == 0) return std::to_string(bytes >> 10) + "KiB";
  return std::to_string(bytes) + " bytes";
}

std::string formatDuration(milliseconds ms) {
  const int64_t v = ms.count();
  if (v != 0 && v % 3600000 == 0) return std::to_string(v / 3600000) + "h";
  if (v != 0 && v % 60000 == 0) return std::to_string(v / 60000) + "m";
  if (v % 1000 == 0) return std::to_string(v / 1000) + "s";
  return std::to_string(v) + "ms";
}


// Checks that `node` is a mapping with unique string keys and calls `each` for every entry in
// file order. `allow_null` treats an empty value (`server:` with every sub-key commented out)
// as an empty mapping.
Status walkMap(const Ctx& ctx, const YAML::Node& node, const std::string& path, int line,
               bool allow_null, const FieldParser& each) {
  if (allow_null && node.IsNull()) return core::okStatus();
  if (!node.IsMap()) return ctx.error(line, path, "expected a mapping, got " + describe(node));
  // yaml-cpp keeps both entries of a repeated key without a word; we must not pick one silently.
  std::map<std::string, int> seen;
  for (auto it = node.begin(); it != node.end(); ++it) {
    Entry entry;
    entry.key = it->first;
    entry.value = it->second;
    entry.key_line = lineOf(entry.key, line);
    // An empty value is positioned at the next token, often on a later line: point at the key.
    entry.value_line = entry.value.IsNull() ? entry.key_line : lineOf(entry.value, entry.key_line);
    if (!entry.key.IsScalar()) {
      return ctx.error(entry.key_line, path,
                       "keys must be plain strings, got " + describe(entry.key));
    }
    const std::string& name = entry.key.Scalar();
    // Error messages are one line: a key holding control bytes is shown escaped.
    std::string shown;
    for (const char c : name) {
      const auto u = static_cast<unsigned char>(c);
      if (u < 0x20 || u == 0x7f) {
        static const char kHex[] = "0123456789abcdef";
        shown += "\\x";
        shown += kHex[u >> 4];
        shown += kHex[u & 15];
      } else {
        shown += c;
      }
    }
    entry.path = path.empty() ? shown : path + "." + shown;
    auto [where, inserted] = seen.emplace(name, entry.key_line);
    if (!inserted) {
      return ctx.error(entry.key_line, entry.path,
                       "duplicate key (first at line " + std::to_string(where->second) + ")");
    }
    if (auto status = each(entry); !status) return status;
  }
  return core::okStatus();
}

// walkMap over the value of `section`, restricted to `fields`: any other key is an error
// listing the accepted ones.
Status parseMap(const Ctx& ctx, const Entry& section, bool allow_null,
                const std::vector<Field>& fields) {
  return walkMap(ctx, section.value, section.path, section.value_line, allow_null,
                 [&](const Entry& entry) -> Status {
                   for (const Field& field : fields) {
                     if (entry.key.Scalar() == field.name) return field.parse(entry);
                   }
                   std::string accepted;
                   for (const Field& field : fields) {
                     accepted += std::string(accepted.empty() ? "" : ", ") + field.name;
                   }
                   return ctx.error(entry.key_line, entry.path,
                                    "unknown key (accepted here: " + accepted + ")");
                 });
}

// ---- value readers: type first, then the value ----

Status readScalar(const Ctx& ctx, const Entry& e, const char* expected, std::string& out) {
  if (!e.value.IsScalar()) {
    return ctx.error(e, std::string("expected ") + expected + ", got " + describe(e.value));
  }
  out = e.value.Scalar();
  return core::okStatus();
}

// Integers and booleans must be written plain: a quoted "8" is a string in YAML, and accepting
// it would make `threads: "8"` and `threads: 8` mean the same by accident.
Status readPlainScalar(const Ctx& ctx, const Entry& e, const char* expected, const char* yaml_tag,
                       std::string& out) {
  if (auto status = readScalar(ctx, e, expected, out); !status) return status;
  const std::string& tag = e.value.Tag();
  if (tag != "?" && tag != yaml_tag) {
    return ctx.error(e, std::string("expected ") + expected + ", got a quoted or tagged string");
  }
  return core::okStatus();
}

// A string that may be empty; `null_is_empty` lets `key:` (no value) mean "".
Status readString(const Ctx& ctx, const Entry& e, bool null_is_empty, std::string& out) {
  if (null_is_empty && e.value.IsNull()) {
    out.clear();
    return core::okStatus();
  }
  return readScalar(ctx, e, "a string", out);
}

Status readBool(const Ctx& ctx, const Entry& e, bool& out) {
  std::string text;
  if (auto s = readPlainScalar(ctx, e, "true or false", "tag:yaml.org,2002:bool", text); !s)
    return s;
  auto parsed = core::parseBool(text);
  if (!parsed) return ctx.error(e, parsed.error().message);
  out = *parsed;
  return core::okStatus();
}

Status readCount(const Ctx& ctx, const Entry& e, uint64_t min, uint64_t max, size_t& out) {
  std::string text;
  if (auto s = readPlainScalar(ctx, e, "an integer", "tag:yaml.org,2002:int", text); !s) return s;
  auto parsed = core::parseCount(text);
  if (!parsed) return ctx.error(e, parsed.error().message);
  if (*parsed < min || *parsed > max) {
    return ctx.error(e, "must be " + std::to_string(min) + ".." + std::to_string(max));
  }
  out = static_cast<size_t>(*parsed);
  return core::okStatus();
}

Status readSize(const Ctx& ctx, const Entry& e, uint64_t min, uint64_t max, size_t& out) {
  std::string text;
  if (auto s = readScalar(ctx, e, "a size (e.g. 65536 or \"64KiB\")", text); !s) return s;
  auto parsed = core::parseSize(text);
  if (!parsed) return ctx.error(e, parsed.error().message);
  if (*parsed < min || *parsed > max) {
    return ctx.error(e, "must be between " + formatSize(min) + " and " + formatSize(max));
  }
  out = static_cast<size_t>(*parsed);
  return core::okStatus();
}

Status readDuration(const Ctx& ctx, const Entry& e, milliseconds min, milliseconds max,
                    milliseconds& out) {
  std::string text;
  if (auto s = readScalar(ctx, e, "a duration (e.g. \"10s\")", text); !s) return s;
  auto parsed = core::parseDuration(text);
  if (!parsed) return ctx.error(e, parsed.error().message);
  if (*parsed < min || *parsed > max) {
    if (min.count() == 1) return ctx.error(e, "must be above 0, at most " + formatDuration(max));
    return ctx.error(e, "must be between " + formatDuration(min) + " and " + formatDuration(max));
  }
  out = *parsed;
  return core::okStatus();
}

Status readListen(const Ctx& ctx, const Entry& e, bool allow_empty, core::ListenAddress& out) {
  std::string text;
  if (auto s = readString(ctx, e, allow_empty, text); !s) return s;
  if (text.empty() && allow_empty) {
    out = core::ListenAddress{};
    return core::okStatus();
  }
  auto parsed = core::parseListenAddress(text);
  if (!parsed) return ctx.error(e, parsed.error().message);
  out = std::move(parsed).value();
  return core::okStatus();
}

// Applies a core check (which says what is wrong without a location) at `e`.
Status check(const Ctx& ctx, const Entry& e, const Status& status) {
  if (!status) return ctx.error(e, status.error().message);
  return core::okStatus();
}

}  // namespace keyway::daemon::yaml_fields
