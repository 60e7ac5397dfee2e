// Tests for daemon/log: the time stamp, the access line's fields, and the credential_use audit
// lines in "every" and "summary" mode (first use at once, counts per period, flushes, threads).
#include <doctest/doctest.h>

#include <stdio.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "daemon/log.hpp"

using namespace keyway;

namespace {

// A Logger writing into an unlinked temp file; lines() reads back everything written so far.
class CapturedLog {
 public:
  CapturedLog() {
    char path[] = "/tmp/keyway-log-test-XXXXXX";
    fd_ = ::mkstemp(path);
    REQUIRE(fd_ >= 0);
    ::unlink(path);
    logger = std::make_shared<daemon::Logger>(fd_);
  }
  ~CapturedLog() { ::close(fd_); }
  CapturedLog(const CapturedLog&) = delete;
  CapturedLog& operator=(const CapturedLog&) = delete;

  std::vector<std::string> lines() const {
    std::vector<std::string> out;
    std::string all;
    char buf[4096];
    off_t off = 0;
    ssize_t n;
    while ((n = ::pread(fd_, buf, sizeof buf, off)) > 0) {
      all.append(buf, static_cast<size_t>(n));
      off += n;
    }
    size_t start = 0;
    for (size_t nl; (nl = all.find('\n', start)) != std::string::npos; start = nl + 1) {
      out.push_back(all.substr(start, nl - start));
    }
    return out;
  }
  std::vector<std::string> lines(std::string_view msg) const {
    std::vector<std::string> out;
    const std::string needle = "\"msg\":\"" + std::string(msg) + "\"";
    for (auto& l : lines()) {
      if (l.find(needle) != std::string::npos) out.push_back(l);
    }
    return out;
  }

  std::shared_ptr<daemon::Logger> logger;

 private:
  int fd_ = -1;
};

core::AccessRecord use(std::string client, std::string credential, std::string scope = "team:alpha") {
  core::AccessRecord r;
  r.client = std::move(client);
  r.team = "alpha";
  r.upstream = "bundleup-api";
  r.method = "GET";
  r.path = "/v1/connections";
  r.status = 200;
  r.credential = std::move(credential);
  r.credential_scope = std::move(scope);
  r.listener = "main";
  r.peer = "127.0.0.1";
  return r;
}

// The integer value of "key": in a JSON line (-1 when absent).
long long intField(const std::string& line, std::string_view key) {
  const std::string needle = "\"" + std::string(key) + "\":";
  const size_t at = line.find(needle);
  if (at == std::string::npos) return -1;
  return std::strtoll(line.c_str() + at + needle.size(), nullptr, 10);
}

bool has(const std::string& line, std::string_view text) { return line.find(text) != std::string::npos; }

}  // namespace

TEST_CASE("isoTimeNow: UTC with milliseconds, the current second") {
  // The bounds come from the clock isoTimeNow() reads. std::time() reads the coarse clock, which
  // lags by up to a tick: just past a second boundary it still says the second before, and the
  // check failed (seen once under TSan in a fresh Debian root).
  const auto wallSeconds = [] { return std::chrono::system_clock::to_time_t(std::chrono::system_clock::now()); };
  for (int i = 0; i < 3; ++i) {
    const std::time_t before = wallSeconds();
    const std::string t = daemon::isoTimeNow();
    const std::time_t after = wallSeconds();
    REQUIRE(t.size() == 24);  // 2026-11-25T22:31:28.123Z
    CHECK(t[4] == '-');
    CHECK(t[10] == 'T');
    CHECK(t[19] == '.');
    CHECK(t[23] == 'Z');
    struct tm tm_utc {};
    REQUIRE(::strptime(t.substr(0, 19).c_str(), "%Y-%m-%dT%H:%M:%S", &tm_utc) != nullptr);
    const std::time_t parsed = ::timegm(&tm_utc);
    CHECK(parsed >= before);
    CHECK(parsed <= after);
    for (size_t k = 20; k < 23; ++k) CHECK((t[k] >= '0' && t[k] <= '9'));
    std::this_thread::sleep_for(std::chrono::milliseconds(400));  // cross a second boundary
  }
}

TEST_CASE("access lines name the credential and its scope; no line for it when none was injected") {
  CapturedLog log;
  daemon::LogEventSink sink(log.logger);
  sink.access(use("app", "bundleup.api_key"));
  core::AccessRecord local = use("app", "");
  local.upstream = "-";
  sink.access(local);
  const auto access = log.lines("access");
  REQUIRE(access.size() == 2);
  CHECK(has(access[0], "\"credential\":\"bundleup.api_key\""));
  CHECK(has(access[0], "\"scope\":\"team:alpha\""));
  CHECK_FALSE(has(access[1], "\"credential\""));
  CHECK(log.lines("credential_use").size() == 1);
}

TEST_CASE("access lines say who acted as which BOSA user and why an error happened; only set fields appear") {
  CapturedLog log;
  daemon::LogEventSink sink(log.logger);
  core::AccessRecord failed = use("app", "bosa.api_key");
  failed.status = 502;
  failed.user = "alice";
  failed.user_token = "minted";
  failed.error = "upstream_unreachable";
  failed.cause = "upstream 'bosa' could not be reached (\"refused\")";
  failed.request_id = 42;
  sink.access(failed);
  sink.access(use("app", ""));
  const auto access = log.lines("access");
  REQUIRE(access.size() == 2);
  CHECK(has(access[0], "\"user\":\"alice\",\"user_token\":\"minted\""));
  CHECK(has(access[0], "\"error\":\"upstream_unreachable\",\"cause\":\"upstream 'bosa' could not be reached "
                       "(\\\"refused\\\")\",\"req\":42}"));
  for (const char* absent : {"\"user\"", "\"user_token\"", "\"error\"", "\"cause\"", "\"req\""}) {
    CHECK_FALSE(has(access[1], absent));
  }
}

TEST_CASE("debug lines: only at debug, with the request number, time and typed fields") {
  CapturedLog log;
  daemon::LogEventSink sink(log.logger);
  CHECK_FALSE(sink.debugEnabled());
  sink.debug(7, 1.5, "route", {{"upstream", "bosa"}});
  CHECK(log.lines().empty());
  log.logger->setLevel(daemon::LogLevel::kDebug);
  CHECK(sink.debugEnabled());
  sink.debug(7, 1.5, "upstream exchange",
             {{"upstream", "bosa"}, {"status", 200}, {"canonical", true}, core::EventField::millis("upstream_ms", 2.25)});
  const auto lines = log.lines("upstream exchange");
  REQUIRE(lines.size() == 1);
  CHECK(has(lines[0], "\"level\":\"debug\",\"msg\":\"upstream exchange\",\"req\":7,\"at_ms\":1.500,"
                      "\"upstream\":\"bosa\",\"status\":200,\"canonical\":true,\"upstream_ms\":2.250}"));
}

TEST_CASE("warn lines with fields are rate-limited per message and subject, whatever the cause says") {
  CapturedLog log;
  daemon::LogEventSink sink(log.logger);
  sink.warn("BOSA user token mint failed", {{"user", "alice"}, {"cause", "refused after 3 ms"}});
  // The same failure again, its free-text cause a little different: a repeat, counted.
  sink.warn("BOSA user token mint failed", {{"user", "alice"}, {"cause", "refused after 4 ms"}});
  sink.warn("BOSA user token mint failed", {{"user", "bob"}, {"cause", "refused after 3 ms"}});
  const auto lines = log.lines("BOSA user token mint failed");
  REQUIRE(lines.size() == 2);
  CHECK(has(lines[0], "\"level\":\"warn\""));
  CHECK(has(lines[0], "\"user\":\"alice\",\"cause\":\"refused after 3 ms\"}"));
  CHECK(has(lines[1], "\"user\":\"bob\""));
}

TEST_CASE("rate-limited warn lines track a bounded number of keys; beyond it lines are written") {
  CapturedLog log;
  const size_t keys = 1024 + 10;
  for (size_t i = 0; i < keys; ++i) {
    const std::string msg = "failure " + std::to_string(i);
    log.logger->warnRateLimited(msg, msg, std::chrono::seconds(3600));
  }
  size_t written = 0;
  for (const auto& l : log.lines()) written += has(l, "\"msg\":\"failure ") ? 1 : 0;
  CHECK(written == keys);
  // A tracked key still repeats silently; an untracked one (the table was full) is written.
  log.logger->warnRateLimited("failure 0", "failure 0", std::chrono::seconds(3600));
  log.logger->warnRateLimited("failure 1033", "failure 1033", std::chrono::seconds(3600));
  CHECK(log.lines("failure 0").size() == 1);
  CHECK(log.lines("failure 1033").size() == 2);
}

TEST_CASE("audit: every mode writes one credential_use line per use") {
  CapturedLog log;
  daemon::LogEventSink sink(log.logger);
  sink.setAuditEveryUse(true);
  for (int i = 0; i < 5; ++i) sink.access(use("app", "bundleup.api_key"));
  const auto audit = log.lines("credential_use");
  REQUIRE(audit.size() == 5);
  for (const auto& l : audit) CHECK(intField(l, "uses") == 1);
}

TEST_CASE("audit: summary mode writes the first use at once and the rest as counts") {
  CapturedLog log;
  daemon::LogEventSink sink(log.logger, std::chrono::milliseconds(300));
  for (int i = 0; i < 100; ++i) sink.access(use("app", "bundleup.api_key"));
  auto audit = log.lines("credential_use");
  REQUIRE(audit.size() == 1);
  CHECK(intField(audit[0], "uses") == 1);
  CHECK(has(audit[0], "\"client\":\"app\""));
  CHECK(has(audit[0], "\"credential\":\"bundleup.api_key\""));
  CHECK(has(audit[0], "\"scope\":\"team:alpha\""));

  SUBCASE("a flush reports the counted uses once") {
    sink.flushAudit();
    sink.flushAudit();
    audit = log.lines("credential_use");
    REQUIRE(audit.size() == 2);
    CHECK(intField(audit[1], "uses") == 99);
  }
  SUBCASE("a use past the period reports the count, itself included") {
    std::this_thread::sleep_for(std::chrono::milliseconds(350));
    sink.access(use("app", "bundleup.api_key"));
    audit = log.lines("credential_use");
    REQUIRE(audit.size() == 2);
    CHECK(intField(audit[1], "uses") == 100);
    CHECK(intField(audit[1], "period_s") == 0);  // 0.35 s, in whole seconds
  }
  SUBCASE("other tuples get their own first line") {
    sink.access(use("other-app", "bundleup.api_key"));
    sink.access(use("app", "bundleiq.api_key"));
    sink.access(use("app", "bundleup.api_key", "shared"));
    sink.access(use("app", "bundleup.api_key"));
    audit = log.lines("credential_use");
    CHECK(audit.size() == 4);
  }
}

TEST_CASE("audit: nothing is lost across threads, and the destructor flushes") {
  CapturedLog log;
  constexpr int kThreads = 4;
  constexpr int kUses = 2000;
  {
    daemon::LogEventSink sink(log.logger, std::chrono::milliseconds(5));
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&sink, t] {
        for (int i = 0; i < kUses; ++i) sink.access(use(t % 2 == 0 ? "even" : "odd", "bundleup.api_key"));
      });
    }
    for (auto& th : threads) th.join();
  }
  long long even = 0, odd = 0;
  for (const auto& l : log.lines("credential_use")) {
    (has(l, "\"client\":\"even\"") ? even : odd) += intField(l, "uses");
  }
  CHECK(even == kThreads / 2 * kUses);
  CHECK(odd == kThreads / 2 * kUses);
}

TEST_CASE("audit lines are info level: none at warn") {
  CapturedLog log;
  log.logger->setLevel(daemon::LogLevel::kWarn);
  daemon::LogEventSink sink(log.logger);
  sink.access(use("app", "bundleup.api_key"));
  sink.flushAudit();
  CHECK(log.lines("credential_use").empty());
  CHECK(log.lines("access").size() == 1);  // access lines are not levelled
}
