// JSON-lines logger and the gateway's access/audit sink.
#include "daemon/log.hpp"

#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

namespace keyway::daemon {

std::optional<LogLevel> parseLogLevel(std::string_view name) {
  if (name == "debug") return LogLevel::kDebug;
  if (name == "info") return LogLevel::kInfo;
  if (name == "warn") return LogLevel::kWarn;
  if (name == "error") return LogLevel::kError;
  return std::nullopt;
}

void appendJsonString(std::string& out, std::string_view s) {
  static const char kHex[] = "0123456789abcdef";
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 15];
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

LogField field(std::string_view key, std::string_view value) { return LogField{key, std::string(value), false}; }
LogField field(std::string_view key, int64_t value) { return LogField{key, std::to_string(value), true}; }
LogField fieldMs(std::string_view key, double ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", ms);
  return LogField{key, buf, true};
}

std::string isoTimeNow() {
  const auto now = std::chrono::system_clock::now();
  const auto secs = std::chrono::system_clock::to_time_t(now);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  struct tm tm_utc;
  gmtime_r(&secs, &tm_utc);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm_utc.tm_year + 1900, tm_utc.tm_mon + 1,
                tm_utc.tm_mday, tm_utc.tm_hour, tm_utc.tm_min, tm_utc.tm_sec, static_cast<int>(ms));
  return buf;
}

namespace {
const char* levelName(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kError: return "error";
  }
  return "info";
}

void appendFields(std::string& line, std::initializer_list<LogField> fields) {
  for (const auto& f : fields) {
    line += ',';
    appendJsonString(line, f.key);
    line += ':';
    if (f.raw) {
      line += f.value;
    } else {
      appendJsonString(line, f.value);
    }
  }
}
}  // namespace

void Logger::writeLine(const std::string& line) {
  // One write(2) per line: lines from different threads never interleave (and stderr is unbuffered).
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    const ssize_t n = ::write(fd_, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // nowhere to report a failing stderr
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
}

void Logger::log(LogLevel level, std::string_view msg, std::initializer_list<LogField> fields) {
  if (!enabled(level)) return;
  std::string line;
  line.reserve(128);
  line += "{\"time\":\"";
  line += isoTimeNow();
  line += "\",\"level\":\"";
  line += levelName(level);
  line += "\",\"msg\":";
  appendJsonString(line, msg);
  appendFields(line, fields);
  line += "}\n";
  writeLine(line);
}

void Logger::warnRateLimited(std::string_view key, std::string_view msg, std::chrono::seconds every,
                             std::initializer_list<LogField> fields) {
  uint64_t suppressed = 0;
  {
    std::lock_guard<std::mutex> lock(rl_mu_);
    auto& st = rate_[std::string(key)];
    const auto now = std::chrono::steady_clock::now();
    if (st.last.time_since_epoch().count() != 0 && now - st.last < every) {
      ++st.suppressed;
      return;
    }
    st.last = now;
    suppressed = st.suppressed;
    st.suppressed = 0;
  }
  if (!enabled(LogLevel::kWarn)) return;
  std::string line;
  line += "{\"time\":\"" + isoTimeNow() + "\",\"level\":\"warn\",\"msg\":";
  appendJsonString(line, msg);
  appendFields(line, fields);
  if (suppressed > 0) line += ",\"suppressed_repeats\":" + std::to_string(suppressed);
  line += "}\n";
  writeLine(line);
}

void LogEventSink::access(const core::AccessRecord& r) {
  if (!r.credential.empty()) {
    // Audit trail: who used which stored credential. Names and scopes only.
    logger_->log(LogLevel::kInfo, "credential_use",
                 {field("client", r.client), field("team", r.team), field("upstream", r.upstream),
                  field("credential", r.credential), field("scope", r.credential_scope)});
  }
  if (!logger_->accessLogEnabled()) return;
  std::string line;
  line.reserve(320);
  line += "{\"time\":\"" + isoTimeNow() + "\",\"level\":\"info\",\"msg\":\"access\",\"listener\":";
  appendJsonString(line, r.listener);
  line += ",\"peer\":";
  appendJsonString(line, r.peer);
  line += ",\"client\":";
  appendJsonString(line, r.client);
  line += ",\"team\":";
  appendJsonString(line, r.team);
  line += ",\"upstream\":";
  appendJsonString(line, r.upstream);
  line += ",\"method\":";
  appendJsonString(line, r.method);
  line += ",\"path\":";
  appendJsonString(line, r.path);
  line += ",\"status\":" + std::to_string(r.status);
  line += ",\"cache\":";
  appendJsonString(line, r.cache);
  char buf[96];
  if (r.upstream_ms >= 0) {
    std::snprintf(buf, sizeof buf, ",\"upstream_ms\":%.3f", r.upstream_ms);
  } else {
    std::snprintf(buf, sizeof buf, ",\"upstream_ms\":null");
  }
  line += buf;
  std::snprintf(buf, sizeof buf, ",\"total_ms\":%.3f", r.total_ms);
  line += buf;
  line += ",\"bytes_in\":" + std::to_string(r.bytes_in);
  line += ",\"bytes_out\":" + std::to_string(r.bytes_out);
  if (!r.error.empty()) {
    line += ",\"error\":";
    appendJsonString(line, r.error);
  }
  line += "}\n";
  logger_->writeLine(line);
}

void LogEventSink::warn(std::string_view message) { logger_->warnRateLimited(message, message, std::chrono::seconds(10)); }

}  // namespace keyway::daemon
