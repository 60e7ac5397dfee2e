// Internal to daemon/ctl/: the text keywayctl reads and prints: comma lists, times, sizes, tables.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <string_view>
#include <vector>

namespace keyway::daemon::ctl {

// "a, b,c" -> {"a", "b", "c"}; entries trimmed, empty ones kept (so the caller can refuse them).
std::vector<std::string> splitList(const std::string& s);
std::string joinList(const std::vector<std::string>& items, const char* sep = ", ");
// UTC, ISO 8601 to the second; "-" for no time.
std::string formatTime(int64_t unix_seconds);
// "2048 B (2.0 KiB)".
std::string formatBytes(uint64_t bytes);
// Aligned columns; rows[0] is the header.
void printTable(std::ostream& out, const std::vector<std::vector<std::string>>& rows);

// One JSON object of `--json` output, its members in the order added (docs/cli.md fixes the
// shapes). Strings are escaped; times are ISO 8601 UTC strings, or null for "none".
class JsonObject {
 public:
  JsonObject& str(std::string_view key, std::string_view value);
  JsonObject& strOrNull(std::string_view key, std::string_view value);  // "" -> null
  JsonObject& time(std::string_view key, int64_t unix_seconds);         // <= 0 -> null
  JsonObject& num(std::string_view key, int64_t value);
  JsonObject& num(std::string_view key, uint64_t value);
  JsonObject& boolean(std::string_view key, bool value);
  JsonObject& strings(std::string_view key, const std::vector<std::string>& values);
  JsonObject& raw(std::string_view key, std::string_view json);  // already JSON
  JsonObject& null(std::string_view key) { return raw(key, "null"); }
  JsonObject& object(std::string_view key, const JsonObject& value) { return raw(key, value.text()); }
  std::string text() const { return body_ + "}"; }

 private:
  JsonObject& member(std::string_view key);
  std::string body_ = "{";
};

// A JSON array of already encoded values: "[]" when empty, else one value per line.
std::string jsonArray(const std::vector<std::string>& values);

}  // namespace keyway::daemon::ctl
