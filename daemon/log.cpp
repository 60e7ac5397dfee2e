// JSON-lines logger and the gateway's access/audit sink.
#include "daemon/log.hpp"

#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <functional>
#include <iterator>
#include <unordered_map>
#include <vector>

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

void appendEventFields(std::string& out, std::initializer_list<core::EventField> fields) {
  char buf[32];
  for (const auto& f : fields) {
    out += ',';
    appendJsonString(out, f.key);
    out += ':';
    switch (f.kind) {
      case core::EventField::Kind::kText: appendJsonString(out, f.text); break;
      case core::EventField::Kind::kInteger: out += std::to_string(f.integer); break;
      case core::EventField::Kind::kBool: out += f.integer != 0 ? "true" : "false"; break;
      case core::EventField::Kind::kMillis:
        std::snprintf(buf, sizeof buf, "%.3f", f.number);
        out += buf;
        break;
    }
  }
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
  const int ms = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000);
  // gmtime_r + snprintf cost ~3,500 instructions: format "YYYY-MM-DDTHH:MM:SS" once a second
  // per thread (as nginx caches its time strings), add the milliseconds by hand.
  thread_local time_t cached_secs = -1;
  thread_local char cached[32];
  thread_local size_t cached_len = 0;
  if (secs != cached_secs) {
    struct tm tm_utc;
    gmtime_r(&secs, &tm_utc);
    const int n = std::snprintf(cached, sizeof cached, "%04d-%02d-%02dT%02d:%02d:%02d", tm_utc.tm_year + 1900,
                                tm_utc.tm_mon + 1, tm_utc.tm_mday, tm_utc.tm_hour, tm_utc.tm_min, tm_utc.tm_sec);
    cached_len = n > 0 ? static_cast<size_t>(n) : 0;
    cached_secs = secs;
  }
  std::string out;
  out.reserve(cached_len + 5);
  out.append(cached, cached_len);
  out += '.';
  out += static_cast<char>('0' + ms / 100);
  out += static_cast<char>('0' + ms / 10 % 10);
  out += static_cast<char>('0' + ms % 10);
  out += 'Z';
  return out;
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
  std::string rendered;
  appendFields(rendered, fields);
  warnRateLimitedRendered(key, msg, every, rendered);
}

void Logger::warnRateLimitedRendered(std::string_view key, std::string_view msg, std::chrono::seconds every,
                                     std::string_view rendered_fields) {
  uint64_t suppressed = 0;
  {
    std::lock_guard<std::mutex> lock(rl_mu_);
    const auto now = std::chrono::steady_clock::now();
    auto it = rate_.find(std::string(key));
    if (it == rate_.end()) {
      // Bounded: keys carry names (users, messages with details), so the table could grow for
      // as long as the daemon runs. Lines whose period is over and nothing suppressed need no
      // state; when the table is still full the line is written without being limited.
      if (rate_.size() >= kMaxRateKeys) {
        for (auto e = rate_.begin(); e != rate_.end();) {
          e = e->second.suppressed == 0 && now - e->second.last >= every ? rate_.erase(e) : std::next(e);
        }
      }
      if (rate_.size() < kMaxRateKeys) rate_.emplace(std::string(key), RateState{now, 0});
    } else if (now - it->second.last < every) {
      ++it->second.suppressed;
      return;
    } else {
      it->second.last = now;
      suppressed = it->second.suppressed;
      it->second.suppressed = 0;
    }
  }
  if (!enabled(LogLevel::kWarn)) return;
  std::string line;
  line += "{\"time\":\"" + isoTimeNow() + "\",\"level\":\"warn\",\"msg\":";
  appendJsonString(line, msg);
  line += rendered_fields;
  if (suppressed > 0) line += ",\"suppressed_repeats\":" + std::to_string(suppressed);
  line += "}\n";
  writeLine(line);
}

namespace {

constexpr size_t kAuditShards = 16;
// Tuples one shard remembers; past it the shard reports and forgets them all (a host has a
// handful of clients and credentials: this only bounds memory against the unexpected).
constexpr size_t kMaxAuditTuples = 4096;

struct AuditTuple {
  std::string client, team, upstream, credential, scope;
  uint64_t unreported = 0;                      // uses counted since the last line
  std::chrono::steady_clock::time_point last_line;

  bool is(const core::AccessRecord& r) const {
    return client == r.client && team == r.team && upstream == r.upstream &&
           credential == r.credential && scope == r.credential_scope;
  }
  core::AccessRecord record() const {
    core::AccessRecord r;
    r.client = client;
    r.team = team;
    r.upstream = upstream;
    r.credential = credential;
    r.credential_scope = scope;
    return r;
  }
};

uint64_t auditHash(const core::AccessRecord& r) {
  // Each field's std::hash (8 bytes a step; this runs for every request that used a stored
  // credential) folded in order with its length, so that moving bytes between fields changes
  // the hash. Collisions only cost a comparison: tuples are compared in full.
  uint64_t h = 1469598103934665603ull;
  for (std::string_view f : {std::string_view(r.client), std::string_view(r.team), std::string_view(r.upstream),
                             std::string_view(r.credential), std::string_view(r.credential_scope)}) {
    h = (h ^ std::hash<std::string_view>{}(f)) * 1099511628211ull;
    h = (h ^ f.size()) * 1099511628211ull;
  }
  return h;
}

size_t myAuditShard() {
  static std::atomic<size_t> next{0};
  thread_local const size_t shard = next.fetch_add(1, std::memory_order_relaxed) % kAuditShards;
  return shard;
}

}  // namespace

struct LogEventSink::AuditShard {
  std::mutex mu;
  std::unordered_multimap<uint64_t, AuditTuple> tuples;
};

LogEventSink::LogEventSink(std::shared_ptr<Logger> logger, std::chrono::milliseconds audit_period)
    : logger_(std::move(logger)), audit_period_(audit_period), shards_(new AuditShard[kAuditShards]) {}

LogEventSink::~LogEventSink() { flushAudit(); }

void LogEventSink::auditLine(const core::AccessRecord& r, uint64_t uses, int64_t period_s) {
  logger_->log(LogLevel::kInfo, "credential_use",
               {field("client", r.client), field("team", r.team), field("upstream", r.upstream),
                field("credential", r.credential), field("scope", r.credential_scope),
                field("uses", static_cast<int64_t>(uses)), field("period_s", period_s)});
}

void LogEventSink::flushAudit() {
  const auto now = std::chrono::steady_clock::now();
  for (size_t i = 0; i < kAuditShards; ++i) {
    std::vector<std::pair<core::AccessRecord, std::pair<uint64_t, int64_t>>> lines;
    {
      std::lock_guard<std::mutex> lock(shards_[i].mu);
      for (auto& entry : shards_[i].tuples) {
        AuditTuple& t = entry.second;
        if (t.unreported == 0) continue;
        const auto period = std::chrono::duration_cast<std::chrono::seconds>(now - t.last_line).count();
        lines.push_back({t.record(), {t.unreported, period}});
        t.unreported = 0;
        t.last_line = now;
      }
    }
    for (const auto& l : lines) auditLine(l.first, l.second.first, l.second.second);
  }
}

namespace {
// `key` (",\"name\":") and the value as a JSON string, only when there is a value: an access
// line has no field for what does not apply.
void appendIfSet(std::string& out, std::string_view key, std::string_view value) {
  if (value.empty()) return;
  out += key;
  appendJsonString(out, value);
}
}  // namespace

void LogEventSink::access(const core::AccessRecord& r) {
  // Audit trail: who used which stored credential. Names and scopes only.
  if (!r.credential.empty() && logger_->enabled(LogLevel::kInfo)) {
    if (audit_every_.load(std::memory_order_relaxed)) {
      auditLine(r, 1, 0);
    } else {
      const auto now = std::chrono::steady_clock::now();
      const uint64_t h = auditHash(r);
      uint64_t report = 0;
      int64_t period_s = 0;
      std::vector<AuditTuple> overflow;
      {
        AuditShard& shard = shards_[myAuditShard()];
        std::lock_guard<std::mutex> lock(shard.mu);
        AuditTuple* tuple = nullptr;
        auto range = shard.tuples.equal_range(h);
        for (auto it = range.first; it != range.second; ++it) {
          if (it->second.is(r)) {
            tuple = &it->second;
            break;
          }
        }
        if (tuple == nullptr) {
          if (shard.tuples.size() >= kMaxAuditTuples) {
            for (auto& entry : shard.tuples) {
              if (entry.second.unreported != 0) overflow.push_back(std::move(entry.second));
            }
            shard.tuples.clear();
          }
          AuditTuple t{r.client, r.team, r.upstream, r.credential, r.credential_scope, 0, now};
          shard.tuples.emplace(h, std::move(t));
          report = 1;  // first use: at once
        } else if (++tuple->unreported, now - tuple->last_line >= audit_period_) {
          report = tuple->unreported;
          period_s = std::chrono::duration_cast<std::chrono::seconds>(now - tuple->last_line).count();
          tuple->unreported = 0;
          tuple->last_line = now;
        }
      }
      for (const AuditTuple& t : overflow) {
        auditLine(t.record(), t.unreported,
                  std::chrono::duration_cast<std::chrono::seconds>(now - t.last_line).count());
      }
      if (report != 0) auditLine(r, report, period_s);
    }
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
  if (!r.credential.empty()) {
    line += ",\"credential\":";
    appendJsonString(line, r.credential);
    line += ",\"scope\":";
    appendJsonString(line, r.credential_scope);
  }
  appendIfSet(line, ",\"user\":", r.user);
  appendIfSet(line, ",\"user_token\":", r.user_token);
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
  appendIfSet(line, ",\"error\":", r.error);
  appendIfSet(line, ",\"cause\":", r.cause);
  if (r.request_id != 0) line += ",\"req\":" + std::to_string(r.request_id);
  line += "}\n";
  logger_->writeLine(line);
}

void LogEventSink::warn(std::string_view message, std::initializer_list<core::EventField> fields) {
  if (fields.size() == 0) {
    logger_->warnRateLimited(message, message, std::chrono::seconds(10));
    return;
  }
  // What repeats is the same message about the same subject (user, upstream...). The free text
  // of `cause` and `error` is left out of the key: it varies between repeats of one failure
  // (libcurl's connect errors say how many ms they took), which would defeat the limit.
  std::string rendered;
  appendEventFields(rendered, fields);
  std::string key(message);
  for (const auto& f : fields) {
    if (f.key == "cause" || f.key == "error") continue;
    appendEventFields(key, {f});
  }
  logger_->warnRateLimitedRendered(key, message, std::chrono::seconds(10), rendered);
}

void LogEventSink::debug(uint64_t request, double at_ms, std::string_view message,
                         std::initializer_list<core::EventField> fields) {
  if (!logger_->enabled(LogLevel::kDebug)) return;
  std::string line;
  line.reserve(192);
  line += "{\"time\":\"";
  line += isoTimeNow();
  line += "\",\"level\":\"debug\",\"msg\":";
  appendJsonString(line, message);
  line += ",\"req\":" + std::to_string(request);
  if (at_ms >= 0) {
    char buf[48];
    std::snprintf(buf, sizeof buf, ",\"at_ms\":%.3f", at_ms);
    line += buf;
  }
  appendEventFields(line, fields);
  line += "}\n";
  logger_->writeLine(line);
}

}  // namespace keyway::daemon
