// Structured logging: one JSON object per line on stderr (journald keeps each line as one entry).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "core/gateway.hpp"

namespace keyway::daemon {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };
std::optional<LogLevel> parseLogLevel(std::string_view name);

// A field value: either a JSON string (escaped) or a raw JSON number/bool.
struct LogField {
  std::string_view key;
  std::string value;
  bool raw = false;
};
LogField field(std::string_view key, std::string_view value);
LogField field(std::string_view key, int64_t value);
LogField fieldMs(std::string_view key, double ms);

// Thread-safe; each line is written with a single write(2) so lines never interleave.
class Logger {
 public:
  explicit Logger(int fd = 2) : fd_(fd) {}
  void setLevel(LogLevel level) { level_.store(level, std::memory_order_relaxed); }
  void setAccessLog(bool on) { access_.store(on, std::memory_order_relaxed); }
  bool accessLogEnabled() const { return access_.load(std::memory_order_relaxed); }
  bool enabled(LogLevel level) const { return level >= level_.load(std::memory_order_relaxed); }

  void log(LogLevel level, std::string_view msg, std::initializer_list<LogField> fields = {});
  void info(std::string_view msg, std::initializer_list<LogField> fields = {}) { log(LogLevel::kInfo, msg, fields); }
  void warn(std::string_view msg, std::initializer_list<LogField> fields = {}) { log(LogLevel::kWarn, msg, fields); }
  void error(std::string_view msg, std::initializer_list<LogField> fields = {}) { log(LogLevel::kError, msg, fields); }
  // Like warn(), but at most once per `every` for the same key; suppressed repeats are counted
  // and reported with the next line that gets through. At most kMaxRateKeys keys are tracked
  // (beyond them, a new key's lines are written unlimited).
  void warnRateLimited(std::string_view key, std::string_view msg, std::chrono::seconds every,
                       std::initializer_list<LogField> fields = {});
  // The same with the fields already rendered (",\"key\":value..." as appendEventFields writes them).
  void warnRateLimitedRendered(std::string_view key, std::string_view msg, std::chrono::seconds every,
                               std::string_view rendered_fields);

  void writeLine(const std::string& line);

 private:
  int fd_;
  std::atomic<LogLevel> level_{LogLevel::kInfo};
  std::atomic<bool> access_{true};
  std::mutex rl_mu_;
  static constexpr size_t kMaxRateKeys = 1024;
  struct RateState {
    std::chrono::steady_clock::time_point last{};
    uint64_t suppressed = 0;
  };
  std::unordered_map<std::string, RateState> rate_;
};

// The gateway's events as log lines: access (docs/operations.md: who, where, what answer and why,
// with the credential's name and scope), warn and per-request debug lines, and
// `credential_use` audit lines (client, team, upstream, credential name and scope: never the
// value), per use or summarised (LogConfig::audit).
//
// Summary mode, and why: a line per use is a write(2) and ~9,000 instructions per request (a
// profile of cache hits: 14% of keywayd's work, more than the cache lookup), paid even with the
// access log off. So the first use of each (client, team, upstream, credential, scope) is written
// at once ("uses": 1), later uses are counted, and a use at least `audit_period` after the last
// line writes the count since that line ("uses": N, "period_s"). flushAudit() writes what is
// still counted (stop, reload, and every audit_period from the daemon's timer), so no use goes
// unreported. The counts live in shards picked per thread, each with its own mutex: reactor
// threads do not contend.
// Thread-safe.
class LogEventSink final : public core::EventSink {
 public:
  explicit LogEventSink(std::shared_ptr<Logger> logger,
                        std::chrono::milliseconds audit_period = std::chrono::seconds(60));
  ~LogEventSink() override;
  void access(const core::AccessRecord& r) override;
  // Rate-limited like Logger::warnRateLimited, per message and the values of its fields except
  // the free-text `cause` and `error` (the line that gets through says the latest).
  void warn(std::string_view message, std::initializer_list<core::EventField> fields = {}) override;
  bool debugEnabled() const override { return logger_->enabled(LogLevel::kDebug); }
  // {"time","level":"debug","msg","req":N,"at_ms":T, fields...}
  void debug(uint64_t request, double at_ms, std::string_view message,
             std::initializer_list<core::EventField> fields) override;
  void setAuditEveryUse(bool every) { audit_every_.store(every, std::memory_order_relaxed); }
  // Writes a line for every tuple with uses not yet reported.
  void flushAudit();

 private:
  struct AuditShard;
  void auditLine(const core::AccessRecord& r, uint64_t uses, int64_t period_s);

  std::shared_ptr<Logger> logger_;
  std::chrono::milliseconds audit_period_;
  std::atomic<bool> audit_every_{false};
  std::unique_ptr<AuditShard[]> shards_;
};

void appendJsonString(std::string& out, std::string_view s);
// ,"key":value for each field (texts as JSON strings, numbers as they are).
void appendEventFields(std::string& out, std::initializer_list<core::EventField> fields);
std::string isoTimeNow();

}  // namespace keyway::daemon
