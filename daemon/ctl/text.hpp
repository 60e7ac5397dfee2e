// Internal to daemon/ctl/: the text keywayctl reads and prints: comma lists, times, sizes, tables.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
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

}  // namespace keyway::daemon::ctl
