// The text keywayctl reads and prints: comma lists, times, sizes, aligned tables.
#include "daemon/ctl/text.hpp"

#include <time.h>

#include <algorithm>
#include <iostream>
#include <sstream>

namespace keyway::daemon::ctl {

std::vector<std::string> splitList(const std::string& s) {
  std::vector<std::string> out;
  std::string item;
  std::istringstream in(s);
  while (std::getline(in, item, ',')) {
    const auto b = item.find_first_not_of(" \t");
    const auto e = item.find_last_not_of(" \t");
    out.push_back(b == std::string::npos ? std::string() : item.substr(b, e - b + 1));
  }
  if (!s.empty() && s.back() == ',') out.emplace_back();
  return out;
}

std::string joinList(const std::vector<std::string>& items, const char* sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i != 0) out += sep;
    out += items[i];
  }
  return out;
}

std::string formatTime(int64_t unix_seconds) {
  if (unix_seconds <= 0) return "-";
  const time_t t = static_cast<time_t>(unix_seconds);
  struct tm tm {};
  if (gmtime_r(&t, &tm) == nullptr) return "-";
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string formatBytes(uint64_t bytes) {
  std::ostringstream s;
  s << bytes << " B";
  if (bytes >= (uint64_t{1} << 20)) {
    s.precision(1);
    s << std::fixed << " (" << static_cast<double>(bytes) / (1 << 20) << " MiB)";
  } else if (bytes >= 1024) {
    s.precision(1);
    s << std::fixed << " (" << static_cast<double>(bytes) / 1024 << " KiB)";
  }
  return s.str();
}

void printTable(std::ostream& out, const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    widths.resize(std::max(widths.size(), row.size()), 0);
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(widths[i] - row[i].size() + 2, ' ');
    }
    out << line << "\n";
  }
}

}  // namespace keyway::daemon::ctl
