// The text keywayctl reads and prints: comma lists, times, sizes, aligned tables.
#include "daemon/ctl/text.hpp"

#include "daemon/log.hpp"

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

JsonObject& JsonObject::member(std::string_view key) {
  if (body_.size() > 1) body_ += ',';
  appendJsonString(body_, key);
  body_ += ':';
  return *this;
}

JsonObject& JsonObject::str(std::string_view key, std::string_view value) {
  member(key);
  appendJsonString(body_, value);
  return *this;
}

JsonObject& JsonObject::strOrNull(std::string_view key, std::string_view value) {
  return value.empty() ? raw(key, "null") : str(key, value);
}

JsonObject& JsonObject::time(std::string_view key, int64_t unix_seconds) {
  const std::string t = formatTime(unix_seconds);
  return t == "-" ? raw(key, "null") : str(key, t);
}

JsonObject& JsonObject::num(std::string_view key, int64_t value) {
  return raw(key, std::to_string(value));
}

JsonObject& JsonObject::num(std::string_view key, uint64_t value) {
  return raw(key, std::to_string(value));
}

JsonObject& JsonObject::boolean(std::string_view key, bool value) {
  return raw(key, value ? "true" : "false");
}

JsonObject& JsonObject::strings(std::string_view key, const std::vector<std::string>& values) {
  member(key);
  body_ += '[';
  for (size_t i = 0; i < values.size(); ++i) {
    if (i != 0) body_ += ',';
    appendJsonString(body_, values[i]);
  }
  body_ += ']';
  return *this;
}

JsonObject& JsonObject::raw(std::string_view key, std::string_view json) {
  member(key);
  body_.append(json);
  return *this;
}

std::string jsonArray(const std::vector<std::string>& values) {
  if (values.empty()) return "[]";
  std::string out = "[\n";
  for (size_t i = 0; i < values.size(); ++i) {
    out += "  " + values[i] + (i + 1 < values.size() ? ",\n" : "\n");
  }
  return out + "]";
}

}  // namespace keyway::daemon::ctl
