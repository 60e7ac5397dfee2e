// Unit tests for core/retry: which outcomes are retried and how often, waits (backoff, jitter,
// Retry-After and its cap), the budget, the 401 re-auth hook, cancel, streaming pass-through,
// and the Retry-After parser. Driven by a scripted fake client, a manual scheduler and a
// ManualClock, all on the test thread.
#include "core/retry.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <deque>
#include <string>
#include <vector>

using namespace keyway::core;
using std::chrono::milliseconds;

namespace {

// A Scheduler whose callbacks run only when the test says so; running one moves the
// ManualClock forward to its deadline.
class ManualScheduler final : public Scheduler {
 public:
  explicit ManualScheduler(std::shared_ptr<ManualClock> clock) : clock_(std::move(clock)) {}

  void after(milliseconds delay, std::function<void()> fn) override {
    delays.push_back(delay);
    pending_.push_back({clock_->monotonicNow() + delay, sequence_++, std::move(fn)});
  }

  // Runs the earliest pending callback; false when there is none.
  bool runNext() {
    if (pending_.empty()) return false;
    auto it = std::min_element(pending_.begin(), pending_.end(), [](const Task& a, const Task& b) {
      return a.due != b.due ? a.due < b.due : a.sequence < b.sequence;
    });
    Task task = std::move(*it);
    pending_.erase(it);
    if (task.due > clock_->monotonicNow()) {
      clock_->advance(std::chrono::duration_cast<milliseconds>(task.due - clock_->monotonicNow()));
    }
    task.fn();
    return true;
  }
  size_t pending() const { return pending_.size(); }

  std::vector<milliseconds> delays;  // every after() delay, in order

 private:
  struct Task {
    std::chrono::steady_clock::time_point due;
    uint64_t sequence;
    std::function<void()> fn;
  };
  std::shared_ptr<ManualClock> clock_;
  std::vector<Task> pending_;
  uint64_t sequence_ = 0;
};

// What one attempt answers. A failure with headers_first delivers the response head (and body)
// first and then fails, like a connection reset mid-body.
struct Script {
  int status = 200;
  Headers headers;
  std::string body;
  UpstreamFailure failure = UpstreamFailure::kNone;
  bool headers_first = false;
};

Script respond(int status, std::string body = "", Headers headers = {}) {
  Script s;
  s.status = status;
  s.body = std::move(body);
  s.headers = std::move(headers);
  return s;
}

Script fail(UpstreamFailure failure) {
  Script s;
  s.failure = failure;
  return s;
}

class FakeCall final : public UpstreamCall {
 public:
  void cancel() override {
    ++cancels;
    if (observer && !completed) {
      completed = true;
      UpstreamOutcome outcome;
      outcome.failure = UpstreamFailure::kCancelled;
      auto obs = std::move(observer);
      obs->onComplete(outcome);
    }
  }
  void resume() override { ++resumes; }

  UpstreamRequest request;
  std::shared_ptr<UpstreamObserver> observer;
  bool completed = false;
  int cancels = 0;
  int resumes = 0;
};

// Records every start(); play() answers the unanswered attempts from the script, in order.
class FakeClient final : public UpstreamClient {
 public:
  std::shared_ptr<UpstreamCall> start(UpstreamRequest request,
                                      std::shared_ptr<UpstreamObserver> observer) override {
    auto call = std::make_shared<FakeCall>();
    call->request = std::move(request);
    call->observer = std::move(observer);
    calls.push_back(call);
    return call;
  }

  // Answers every attempt not answered yet with the next script entry.
  void play() {
    for (auto& call : calls) {
      if (call->completed || started_answer_(call)) continue;
      REQUIRE_FALSE(scripts.empty());
      Script s = std::move(scripts.front());
      scripts.pop_front();
      answer(*call, s);
    }
  }

  static void answer(FakeCall& call, const Script& s) {
    auto obs = call.observer;
    UpstreamOutcome outcome;
    if (s.failure == UpstreamFailure::kNone || s.headers_first) {
      obs->onHeaders(s.status, "", s.headers);
      if (!s.body.empty()) obs->onBody(s.body);
      outcome.headers_received = true;
    }
    outcome.failure = s.failure;
    call.completed = true;
    call.observer.reset();
    obs->onComplete(outcome);
  }

  std::deque<Script> scripts;
  std::vector<std::shared_ptr<FakeCall>> calls;

 private:
  static bool started_answer_(const std::shared_ptr<FakeCall>& call) { return !call->observer; }
};

class RecordingObserver final : public UpstreamObserver {
 public:
  void onHeaders(int s, std::string_view, Headers h) override {
    if (completes > 0) ++after_complete;
    ++headers_calls;
    status = s;
    headers = std::move(h);
  }
  bool onBody(std::string_view chunk) override {
    if (completes > 0) ++after_complete;
    body.append(chunk);
    ++chunks;
    return !pause_on_body;
  }
  void onComplete(const UpstreamOutcome& o) override {
    if (completes > 0) ++after_complete;
    ++completes;
    outcome = o;
  }

  int headers_calls = 0, chunks = 0, completes = 0, after_complete = 0;
  int status = 0;
  Headers headers;
  std::string body;
  UpstreamOutcome outcome;
  bool pause_on_body = false;
};

// One startWithRetries() with its fakes.
struct Harness {
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
  std::shared_ptr<ManualScheduler> scheduler = std::make_shared<ManualScheduler>(clock);
  std::shared_ptr<FakeClient> client = std::make_shared<FakeClient>();
  std::shared_ptr<RecordingObserver> observer = std::make_shared<RecordingObserver>();
  RetryPolicy policy;
  RetryHooks hooks;
  int retries = 0;
  UpstreamRequest request;
  std::shared_ptr<UpstreamCall> call;

  Harness() {
    request.method = "POST";
    request.url = "http://127.0.0.1:9/connectors/github/list_issues";
    request.headers = {{"X-API-Key", "k"}};
    request.body = "{}";
    request.total_timeout = milliseconds(60000);
    hooks.on_retry = [this] { ++retries; };
  }

  void start() {
    call = startWithRetries(client, scheduler, clock, request, policy, hooks, observer);
  }

  // Answers attempts and runs timers until nothing is left to do.
  void runAll() {
    for (int guard = 0; guard < 1000; ++guard) {
      client->play();
      if (!scheduler->runNext()) return;
    }
    FAIL("did not settle");
  }

  size_t attempts() const { return client->calls.size(); }
};

Headers retryAfter(const std::string& value) { return {{"Retry-After", value}}; }

}  // namespace

TEST_CASE("a 429 is retried and the observer sees only the final exchange") {
  Harness h;
  h.client->scripts = {respond(429, "slow down"), respond(200, "{\"data\":1}")};
  h.start();
  CHECK(h.attempts() == 1);  // attempt 1 starts inside startWithRetries
  h.runAll();
  CHECK(h.attempts() == 2);
  CHECK(h.retries == 1);
  CHECK(h.observer->headers_calls == 1);
  CHECK(h.observer->status == 200);
  CHECK(h.observer->body == "{\"data\":1}");
  CHECK(h.observer->completes == 1);
  CHECK(h.observer->after_complete == 0);
  CHECK(h.observer->outcome.failure == UpstreamFailure::kNone);
  CHECK(h.observer->outcome.headers_received);
  // The whole call, including the wait, is in elapsed.
  REQUIRE(h.scheduler->delays.size() == 1);
  CHECK(h.observer->outcome.elapsed >= h.scheduler->delays[0]);
  // Each attempt sends the same request.
  CHECK(h.client->calls[1]->request.body == "{}");
  CHECK(h.client->calls[1]->request.url == h.request.url);
  CHECK(h.client->calls[1]->request.headers.size() == 1);
}

TEST_CASE("429 on every attempt: max_attempts attempts, then the last 429 unchanged") {
  for (int max_attempts : {1, 2, 3, 5}) {
    CAPTURE(max_attempts);
    Harness h;
    h.policy.max_attempts = max_attempts;
    for (int i = 0; i < 10; ++i) {
      h.client->scripts.push_back(
          respond(429, "busy " + std::to_string(i), {{"X-Attempt", std::to_string(i)}}));
    }
    h.start();
    h.runAll();
    CHECK(h.attempts() == static_cast<size_t>(max_attempts));
    CHECK(h.retries == max_attempts - 1);
    CHECK(h.observer->status == 429);
    CHECK(h.observer->body == "busy " + std::to_string(max_attempts - 1));
    CHECK(headerValue(h.observer->headers, "X-Attempt") == std::to_string(max_attempts - 1));
    CHECK(h.observer->completes == 1);
  }
}

TEST_CASE("max_attempts below 1 means one attempt") {
  Harness h;
  h.policy.max_attempts = 0;
  h.client->scripts = {respond(429), respond(200)};
  h.start();
  h.runAll();
  CHECK(h.attempts() == 1);
  CHECK(h.observer->status == 429);
}

TEST_CASE("5xx is retried only for idempotent requests") {
  for (int status : {500, 502, 503, 504, 599}) {
    CAPTURE(status);
    Harness writes;
    writes.client->scripts = {respond(status, "down"), respond(200)};
    writes.start();
    writes.runAll();
    CHECK(writes.attempts() == 1);
    CHECK(writes.observer->status == status);
    CHECK(writes.observer->body == "down");

    Harness reads;
    reads.policy.idempotent = true;
    reads.client->scripts = {respond(status), respond(status), respond(status, "last")};
    reads.start();
    reads.runAll();
    CHECK(reads.attempts() == 3);
    CHECK(reads.observer->status == status);
    CHECK(reads.observer->body == "last");
    CHECK(reads.retries == 2);
  }
}

TEST_CASE("other statuses pass straight through") {
  for (int status : {200, 201, 204, 301, 400, 403, 404, 409, 422, 499, 600}) {
    CAPTURE(status);
    for (bool idempotent : {false, true}) {
      Harness h;
      h.policy.idempotent = idempotent;
      h.client->scripts = {respond(status, "b")};
      h.start();
      h.runAll();
      CHECK(h.attempts() == 1);
      CHECK(h.observer->status == status);
      CHECK(h.observer->body == "b");
      // An idempotent response is held until complete and handed over right away (no wait).
      for (auto d : h.scheduler->delays) CHECK(d.count() == 0);
    }
  }
}

TEST_CASE("backoff doubles from base, is capped, and adds up to 100% jitter") {
  Harness h;
  h.policy.max_attempts = 8;
  h.policy.budget = milliseconds(0);  // no budget: only the waits matter here
  h.policy.base_backoff = milliseconds(100);
  h.policy.max_backoff = milliseconds(1000);
  for (int i = 0; i < 8; ++i) h.client->scripts.push_back(respond(429));
  h.start();
  h.runAll();
  CHECK(h.attempts() == 8);
  REQUIRE(h.scheduler->delays.size() == 7);
  const int64_t steps[] = {100, 200, 400, 800, 1000, 1000, 1000};
  for (size_t k = 0; k < 7; ++k) {
    CAPTURE(k);
    CHECK(h.scheduler->delays[k].count() >= steps[k]);
    CHECK(h.scheduler->delays[k].count() <= 2 * steps[k]);
  }
}

TEST_CASE("jitter varies between calls") {
  std::vector<int64_t> first_waits;
  for (int i = 0; i < 40; ++i) {
    Harness h;
    h.policy.base_backoff = milliseconds(1000);
    h.client->scripts = {respond(429), respond(200)};
    h.start();
    h.runAll();
    REQUIRE(h.scheduler->delays.size() == 1);
    first_waits.push_back(h.scheduler->delays[0].count());
  }
  std::sort(first_waits.begin(), first_waits.end());
  CHECK(first_waits.front() >= 1000);
  CHECK(first_waits.back() <= 2000);
  CHECK(first_waits.front() != first_waits.back());
}

TEST_CASE("Retry-After within the cap is waited, at least the backoff") {
  Harness h;
  h.client->scripts = {respond(429, "", retryAfter("3")), respond(200)};
  h.start();
  h.runAll();
  CHECK(h.attempts() == 2);
  REQUIRE(h.scheduler->delays.size() == 1);
  CHECK(h.scheduler->delays[0] == milliseconds(3000));

  Harness zero;  // Retry-After: 0 still waits the backoff
  zero.client->scripts = {respond(429, "", retryAfter("0")), respond(200)};
  zero.start();
  zero.runAll();
  REQUIRE(zero.scheduler->delays.size() == 1);
  CHECK(zero.scheduler->delays[0] >= milliseconds(200));
  CHECK(zero.scheduler->delays[0] <= milliseconds(400));

  Harness date;  // as an HTTP-date, relative to the clock's system time
  date.clock->setSystem(std::chrono::system_clock::time_point(std::chrono::seconds(1700000000)));
  // 1700000000 = Tue, 14 Nov 2023 22:13:20 GMT
  date.client->scripts = {respond(429, "", retryAfter("Tue, 14 Nov 2023 22:13:25 GMT")),
                          respond(200)};
  date.start();
  date.runAll();
  REQUIRE(date.scheduler->delays.size() == 1);
  CHECK(date.scheduler->delays[0] == milliseconds(5000));
  CHECK(date.observer->status == 200);

  Harness garbage;  // unparseable: as if absent
  garbage.client->scripts = {respond(429, "", retryAfter("soon")), respond(200)};
  garbage.start();
  garbage.runAll();
  CHECK(garbage.attempts() == 2);
  REQUIRE(garbage.scheduler->delays.size() == 1);
  CHECK(garbage.scheduler->delays[0] <= milliseconds(400));
}

TEST_CASE("Retry-After above the cap: the 429 is passed through unchanged") {
  Harness h;
  h.client->scripts = {respond(429, "{\"error\":\"rate\"}", {{"Retry-After", "3600"}, {"X-R", "1"}}),
                       respond(200)};
  h.start();
  h.runAll();
  CHECK(h.attempts() == 1);
  CHECK(h.retries == 0);
  CHECK(h.observer->status == 429);
  CHECK(h.observer->body == "{\"error\":\"rate\"}");
  CHECK(headerValue(h.observer->headers, "Retry-After") == "3600");
  CHECK(headerValue(h.observer->headers, "X-R") == "1");
  CHECK(h.scheduler->delays.empty());

  Harness at_cap;  // exactly the cap is still waited
  at_cap.policy.retry_after_cap = milliseconds(10000);
  at_cap.client->scripts = {respond(429, "", retryAfter("10")), respond(200)};
  at_cap.start();
  at_cap.runAll();
  CHECK(at_cap.attempts() == 2);
  CHECK(at_cap.observer->status == 200);
}

TEST_CASE("503 with a Retry-After above the cap is not retried either") {
  Harness h;
  h.policy.idempotent = true;
  h.client->scripts = {respond(503, "maintenance", retryAfter("86400")), respond(200)};
  h.start();
  h.runAll();
  CHECK(h.attempts() == 1);
  CHECK(h.observer->status == 503);
  CHECK(h.observer->body == "maintenance");
}

TEST_CASE("budget: no attempt is started that cannot fit") {
  Harness h;
  h.policy.max_attempts = 10;
  h.policy.budget = milliseconds(2000);
  h.policy.min_attempt = milliseconds(250);
  for (int i = 0; i < 10; ++i) {
    h.client->scripts.push_back(respond(429, "n" + std::to_string(i), retryAfter("1")));
  }
  h.start();
  h.runAll();
  // t=0: 429, wait 1 s (1 s + 250 ms fits in 2 s); t=1 s: 429, 1 s more does not fit.
  CHECK(h.attempts() == 2);
  CHECK(h.observer->status == 429);
  CHECK(h.observer->body == "n1");
  // Each attempt's timeout is capped by what is left of the budget.
  CHECK(h.client->calls[0]->request.total_timeout == milliseconds(2000));
  CHECK(h.client->calls[1]->request.total_timeout == milliseconds(1000));
}

TEST_CASE("budget: the request's own shorter timeout is kept; 0 (a stream) gets the budget") {
  Harness h;
  h.request.total_timeout = milliseconds(500);
  h.client->scripts = {respond(200)};
  h.start();
  h.runAll();
  CHECK(h.client->calls[0]->request.total_timeout == milliseconds(500));

  Harness stream;
  stream.request.total_timeout = milliseconds(0);
  stream.client->scripts = {respond(200)};
  stream.start();
  stream.runAll();
  CHECK(stream.client->calls[0]->request.total_timeout == milliseconds(25000));

  Harness unlimited;
  unlimited.request.total_timeout = milliseconds(0);
  unlimited.policy.budget = milliseconds(0);
  unlimited.client->scripts = {respond(200)};
  unlimited.start();
  unlimited.runAll();
  CHECK(unlimited.client->calls[0]->request.total_timeout == milliseconds(0));
}

TEST_CASE("budget spent while a swallowed 429 was read: that 429 is handed over") {
  Harness h;
  h.policy.budget = milliseconds(2000);
  h.start();
  REQUIRE(h.attempts() == 1);
  auto& attempt = *h.client->calls[0];
  auto obs = attempt.observer;
  obs->onHeaders(429, "Too Many Requests", retryAfter("1"));  // swallowed: a retry fits now
  CHECK(h.observer->headers_calls == 0);
  obs->onBody("part one, ");
  h.clock->advance(milliseconds(1500));  // a slow body
  obs->onBody("part two");
  attempt.completed = true;
  attempt.observer.reset();
  obs->onComplete(UpstreamOutcome{UpstreamFailure::kNone, "", true, false, {}});
  obs.reset();
  h.runAll();
  CHECK(h.attempts() == 1);
  CHECK(h.observer->status == 429);
  CHECK(h.observer->body == "part one, part two");
  CHECK(headerValue(h.observer->headers, "Retry-After") == "1");
  CHECK(h.observer->completes == 1);
  CHECK(h.observer->outcome.headers_received);
  CHECK(h.observer->outcome.elapsed >= milliseconds(1500));
}

TEST_CASE("connection failures: which are retried") {
  struct Case {
    UpstreamFailure failure;
    bool idempotent;
    size_t attempts;
  };
  const Case cases[] = {
      {UpstreamFailure::kConnectFailed, false, 3}, {UpstreamFailure::kConnectFailed, true, 3},
      {UpstreamFailure::kSendFailed, false, 1},    {UpstreamFailure::kSendFailed, true, 3},
      {UpstreamFailure::kTimeout, false, 1},       {UpstreamFailure::kTimeout, true, 3},
      {UpstreamFailure::kProtocol, false, 1},      {UpstreamFailure::kProtocol, true, 3},
      {UpstreamFailure::kTls, true, 1},            {UpstreamFailure::kResponseTooLarge, true, 1},
      {UpstreamFailure::kCancelled, true, 1},
  };
  for (const Case& c : cases) {
    CAPTURE(static_cast<int>(c.failure));
    CAPTURE(c.idempotent);
    Harness h;
    h.policy.idempotent = c.idempotent;
    for (int i = 0; i < 5; ++i) h.client->scripts.push_back(fail(c.failure));
    h.start();
    h.runAll();
    CHECK(h.attempts() == c.attempts);
    CHECK(h.retries == static_cast<int>(c.attempts) - 1);
    // No headers ever reached the observer: it gets only onComplete, with that failure.
    CHECK(h.observer->headers_calls == 0);
    CHECK(h.observer->chunks == 0);
    CHECK(h.observer->completes == 1);
    CHECK(h.observer->outcome.failure == c.failure);
    CHECK_FALSE(h.observer->outcome.headers_received);
  }
}

TEST_CASE("a connect failure then a success: the observer sees the success only") {
  Harness h;
  h.client->scripts = {fail(UpstreamFailure::kConnectFailed), respond(201, "made")};
  h.start();
  h.runAll();
  CHECK(h.attempts() == 2);
  CHECK(h.observer->status == 201);
  CHECK(h.observer->body == "made");
  CHECK(h.observer->outcome.failure == UpstreamFailure::kNone);
}

TEST_CASE("idempotent: a response cut short is held, so the failure is retried; the observer sees the retry") {
  Harness h;
  h.policy.idempotent = true;
  Script cut = respond(200, "partial");
  cut.failure = UpstreamFailure::kSendFailed;
  cut.headers_first = true;
  h.client->scripts = {cut, respond(200, "whole")};
  h.start();
  h.runAll();
  CHECK(h.attempts() == 2);
  CHECK(h.retries == 1);
  CHECK(h.observer->headers_calls == 1);
  CHECK(h.observer->status == 200);
  CHECK(h.observer->body == "whole");
  CHECK(h.observer->outcome.failure == UpstreamFailure::kNone);
  CHECK(h.observer->completes == 1);
}

TEST_CASE("a failure after headers reached the observer is never retried") {
  // Not idempotent: headers pass straight through, so a later failure is the observer's.
  Harness h;
  Script cut = respond(200, "partial");
  cut.failure = UpstreamFailure::kSendFailed;
  cut.headers_first = true;
  h.client->scripts = {cut, respond(200, "whole")};
  h.start();
  h.runAll();
  CHECK(h.attempts() == 1);
  CHECK(h.observer->status == 200);
  CHECK(h.observer->body == "partial");
  CHECK(h.observer->outcome.failure == UpstreamFailure::kSendFailed);
  CHECK(h.observer->outcome.headers_received);

  // Idempotent but larger than the hold limit: handed over while streaming, then not retried.
  Harness big;
  big.policy.idempotent = true;
  Script large = respond(200, std::string((1u << 20) + 10, 'x'));
  large.failure = UpstreamFailure::kSendFailed;
  large.headers_first = true;
  big.client->scripts = {large, respond(200, "whole")};
  big.start();
  big.runAll();
  CHECK(big.attempts() == 1);
  CHECK(big.observer->status == 200);
  CHECK(big.observer->body.size() == (1u << 20) + 10);
  CHECK(big.observer->outcome.failure == UpstreamFailure::kSendFailed);
}

TEST_CASE("a swallowed 503 cut short is still retried as decided at its headers") {
  Harness h;
  h.policy.idempotent = true;
  Script cut = respond(503, "par");
  cut.failure = UpstreamFailure::kSendFailed;
  cut.headers_first = true;
  h.client->scripts = {cut, respond(200, "ok")};
  h.start();
  h.runAll();
  CHECK(h.attempts() == 2);
  CHECK(h.observer->status == 200);
  CHECK(h.observer->body == "ok");
}

TEST_CASE("budget also bounds failure retries") {
  Harness h;
  h.policy.max_attempts = 10;
  h.policy.budget = milliseconds(1000);
  h.policy.base_backoff = milliseconds(300);
  h.policy.max_backoff = milliseconds(300);
  h.policy.min_attempt = milliseconds(100);
  for (int i = 0; i < 10; ++i) h.client->scripts.push_back(fail(UpstreamFailure::kConnectFailed));
  h.start();
  h.runAll();
  // Waits are 300..600 ms each; at most three attempts fit in 1 s, and never all ten.
  CHECK(h.attempts() >= 2);
  CHECK(h.attempts() <= 3);
  CHECK(h.observer->outcome.failure == UpstreamFailure::kConnectFailed);
  CHECK(h.observer->outcome.elapsed <= milliseconds(1000));
}

TEST_CASE("401 with a hook: re-auth and resend, not counted as an attempt") {
  Harness h;
  h.policy.max_attempts = 1;
  int hook_calls = 0;
  h.hooks.on_unauthorized = [&](UpstreamRequest& request, std::function<void(bool)> done) {
    ++hook_calls;
    setHeader(request.headers, "Authorization", "Bearer fresh");
    done(true);
  };
  h.client->scripts = {respond(401, "expired"), respond(200, "mine")};
  h.start();
  h.runAll();
  CHECK(hook_calls == 1);
  CHECK(h.attempts() == 2);
  CHECK(h.retries == 0);
  CHECK(headerValue(h.client->calls[1]->request.headers, "Authorization") == "Bearer fresh");
  CHECK_FALSE(headerValue(h.client->calls[0]->request.headers, "Authorization").has_value());
  CHECK(h.observer->status == 200);
  CHECK(h.observer->body == "mine");
  CHECK(h.observer->headers_calls == 1);
  CHECK(h.observer->completes == 1);
}

TEST_CASE("401 twice: the hook runs once and the second 401 goes to the observer") {
  Harness h;
  int hook_calls = 0;
  h.hooks.on_unauthorized = [&](UpstreamRequest&, std::function<void(bool)> done) {
    ++hook_calls;
    done(true);
  };
  h.client->scripts = {respond(401, "a"), respond(401, "b"), respond(200)};
  h.start();
  h.runAll();
  CHECK(hook_calls == 1);
  CHECK(h.attempts() == 2);
  CHECK(h.observer->status == 401);
  CHECK(h.observer->body == "b");
}

TEST_CASE("401 with a hook answering done(false): the 401 is replayed whole") {
  Harness h;
  std::function<void(bool)> saved;
  h.hooks.on_unauthorized = [&](UpstreamRequest&, std::function<void(bool)> done) {
    saved = std::move(done);  // answered later, from "another request"
  };
  h.client->scripts = {respond(401, "{\"error\":\"bad secret\"}", {{"WWW-Authenticate", "Bearer"}})};
  h.start();
  h.runAll();
  REQUIRE(saved);
  CHECK(h.observer->completes == 0);
  CHECK(h.observer->headers_calls == 0);
  saved(false);
  saved(true);  // a second answer is ignored
  h.runAll();
  CHECK(h.attempts() == 1);
  CHECK(h.observer->status == 401);
  CHECK(h.observer->body == "{\"error\":\"bad secret\"}");
  CHECK(headerValue(h.observer->headers, "WWW-Authenticate") == "Bearer");
  CHECK(h.observer->completes == 1);
  CHECK(h.observer->outcome.failure == UpstreamFailure::kNone);
  CHECK(h.observer->outcome.headers_received);
  CHECK(h.observer->after_complete == 0);
}

TEST_CASE("a hook that drops done() without calling it counts as done(false)") {
  Harness h;
  h.hooks.on_unauthorized = [](UpstreamRequest&, std::function<void(bool)>) {};
  h.client->scripts = {respond(401, "no")};
  h.start();
  h.runAll();
  CHECK(h.observer->status == 401);
  CHECK(h.observer->body == "no");
  CHECK(h.observer->completes == 1);
}

TEST_CASE("401 without a hook passes straight through") {
  Harness h;
  h.client->scripts = {respond(401, "no")};
  h.start();
  h.runAll();
  CHECK(h.attempts() == 1);
  CHECK(h.observer->status == 401);
  CHECK(h.scheduler->delays.empty());
}

TEST_CASE("a 401 body over 1 MiB cannot be replayed: kResponseTooLarge on done(false)") {
  Harness h;
  h.hooks.on_unauthorized = [](UpstreamRequest&, std::function<void(bool)> done) { done(false); };
  h.client->scripts = {respond(401, std::string((1u << 20) + 1, 'x'))};
  h.start();
  h.runAll();
  CHECK(h.observer->headers_calls == 0);
  CHECK(h.observer->completes == 1);
  CHECK(h.observer->outcome.failure == UpstreamFailure::kResponseTooLarge);
}

TEST_CASE("after re-auth a 429 is still retried") {
  Harness h;
  h.hooks.on_unauthorized = [](UpstreamRequest&, std::function<void(bool)> done) { done(true); };
  h.client->scripts = {respond(401), respond(429), respond(200, "ok")};
  h.start();
  h.runAll();
  CHECK(h.attempts() == 3);
  CHECK(h.retries == 1);
  CHECK(h.observer->body == "ok");
}

TEST_CASE("cancel during a wait: kCancelled, and no further attempt") {
  Harness h;
  h.client->scripts = {respond(429, "", retryAfter("5")), respond(200)};
  h.start();
  h.client->play();  // the 429 is swallowed, a 5 s wait is pending
  REQUIRE(h.scheduler->pending() == 1);
  h.call->cancel();
  h.call->cancel();  // twice is harmless
  CHECK(h.observer->completes == 0);  // delivered from the scheduler, not inside cancel()
  h.runAll();
  CHECK(h.attempts() == 1);
  CHECK(h.observer->completes == 1);
  CHECK(h.observer->headers_calls == 0);
  CHECK(h.observer->outcome.failure == UpstreamFailure::kCancelled);
  CHECK(h.observer->after_complete == 0);
  CHECK(h.retries == 0);
}

TEST_CASE("cancel during an attempt reaches that attempt") {
  Harness h;
  h.client->scripts = {respond(429), respond(200)};
  h.start();
  h.client->play();
  h.scheduler->runNext();  // attempt 2 starts
  REQUIRE(h.attempts() == 2);
  h.call->cancel();
  CHECK(h.client->calls[1]->cancels == 1);
  CHECK(h.client->calls[0]->cancels == 0);
  CHECK(h.observer->completes == 1);
  CHECK(h.observer->outcome.failure == UpstreamFailure::kCancelled);
  h.runAll();
  CHECK(h.attempts() == 2);
  CHECK(h.observer->completes == 1);
}

TEST_CASE("cancel while the 401 hook runs: kCancelled, a later done(true) sends nothing") {
  Harness h;
  std::function<void(bool)> saved;
  h.hooks.on_unauthorized = [&](UpstreamRequest&, std::function<void(bool)> done) {
    saved = std::move(done);
  };
  h.client->scripts = {respond(401), respond(200)};
  h.start();
  h.runAll();
  REQUIRE(saved);
  h.call->cancel();
  h.runAll();
  CHECK(h.observer->completes == 1);
  CHECK(h.observer->outcome.failure == UpstreamFailure::kCancelled);
  saved(true);
  h.runAll();
  CHECK(h.attempts() == 1);
  CHECK(h.observer->completes == 1);
}

TEST_CASE("after completion cancel() and resume() are no-ops") {
  Harness h;
  h.client->scripts = {respond(200, "x")};
  h.start();
  h.runAll();
  h.call->cancel();
  h.call->resume();
  h.runAll();
  CHECK(h.client->calls[0]->cancels == 0);
  CHECK(h.client->calls[0]->resumes == 0);
  CHECK(h.observer->completes == 1);
  CHECK(h.observer->outcome.failure == UpstreamFailure::kNone);
}

TEST_CASE("streaming passes through: chunks, their pause result, resume() to the current attempt") {
  Harness h;
  h.request.allow_streaming = true;
  h.request.total_timeout = milliseconds(0);
  h.client->scripts = {respond(429)};
  h.start();
  h.client->play();
  h.scheduler->runNext();
  REQUIRE(h.attempts() == 2);
  CHECK(h.client->calls[1]->request.allow_streaming);
  auto& attempt = *h.client->calls[1];
  auto obs = attempt.observer;
  obs->onHeaders(200, "OK", {{"Content-Type", "text/event-stream"}});
  CHECK(h.observer->headers_calls == 1);
  CHECK(obs->onBody("data: 1\n\n"));
  h.observer->pause_on_body = true;
  CHECK_FALSE(obs->onBody("data: 2\n\n"));  // the observer's "pause" reaches the client
  h.call->resume();
  CHECK(attempt.resumes == 1);
  CHECK(h.client->calls[0]->resumes == 0);
  h.observer->pause_on_body = false;
  CHECK(obs->onBody("data: 3\n\n"));
  CHECK(h.observer->body == "data: 1\n\ndata: 2\n\ndata: 3\n\n");
  CHECK(h.observer->chunks == 3);
  CHECK(h.observer->completes == 0);
  attempt.completed = true;
  attempt.observer.reset();
  obs->onComplete(UpstreamOutcome{});
  CHECK(h.observer->completes == 1);
}

TEST_CASE("a replayed 401 body paused by the observer completes after resume()") {
  Harness h;
  h.hooks.on_unauthorized = [](UpstreamRequest&, std::function<void(bool)> done) { done(false); };
  h.observer->pause_on_body = true;
  h.client->scripts = {respond(401, "denied")};
  h.start();
  h.runAll();
  CHECK(h.observer->body == "denied");
  CHECK(h.observer->completes == 0);
  h.call->resume();
  h.runAll();
  CHECK(h.observer->completes == 1);
  CHECK(h.observer->outcome.failure == UpstreamFailure::kNone);
}

TEST_CASE("an attempt that completes inside start() is handled") {
  // A client that fails at once on the calling thread (as curl does once shut down).
  class InlineFailClient final : public UpstreamClient {
   public:
    std::shared_ptr<UpstreamCall> start(UpstreamRequest, std::shared_ptr<UpstreamObserver> o) override {
      ++starts;
      UpstreamOutcome outcome;
      outcome.failure = UpstreamFailure::kConnectFailed;
      o->onComplete(outcome);
      return std::make_shared<FakeCall>();
    }
    int starts = 0;
  };
  auto clock = std::make_shared<ManualClock>();
  auto scheduler = std::make_shared<ManualScheduler>(clock);
  auto client = std::make_shared<InlineFailClient>();
  auto observer = std::make_shared<RecordingObserver>();
  UpstreamRequest request;
  auto call = startWithRetries(client, scheduler, clock, request, RetryPolicy{}, RetryHooks{}, observer);
  while (scheduler->runNext()) {
  }
  CHECK(client->starts == 3);
  CHECK(observer->completes == 1);
  CHECK(observer->outcome.failure == UpstreamFailure::kConnectFailed);
}

TEST_CASE("the call lets go of its observer and hooks once finished") {
  Harness h;
  auto probe = std::make_shared<int>(0);
  std::weak_ptr<int> weak_probe = probe;
  h.hooks.on_retry = [probe] {};
  probe.reset();
  h.client->scripts = {respond(429), respond(200)};
  h.start();
  h.hooks = RetryHooks{};  // the harness's copy
  std::weak_ptr<RecordingObserver> weak_observer = h.observer;
  h.runAll();
  CHECK(h.observer->completes == 1);
  h.observer.reset();
  CHECK(weak_observer.expired());
  CHECK(weak_probe.expired());
  // And nothing keeps the call itself alive once the caller drops it.
  std::weak_ptr<UpstreamCall> weak_call = h.call;
  h.call.reset();
  h.client->calls.clear();
  CHECK(weak_call.expired());
}

TEST_CASE("parseRetryAfter: delta-seconds") {
  const auto now = std::chrono::system_clock::time_point(std::chrono::seconds(1700000000));
  CHECK(parseRetryAfter("0", now) == milliseconds(0));
  CHECK(parseRetryAfter("120", now) == milliseconds(120000));
  CHECK(parseRetryAfter(" 5\t", now) == milliseconds(5000));
  CHECK(parseRetryAfter("007", now) == milliseconds(7000));
  // Absurdly large values saturate instead of overflowing.
  const auto huge = parseRetryAfter("99999999999999999999999999", now);
  REQUIRE(huge.has_value());
  CHECK(*huge > milliseconds(std::chrono::hours(24 * 365 * 30)));
}

TEST_CASE("parseRetryAfter: HTTP-dates in all three forms, past dates are 0") {
  // 1700000000 = Tue, 14 Nov 2023 22:13:20 GMT
  const auto now = std::chrono::system_clock::time_point(std::chrono::seconds(1700000000));
  CHECK(parseRetryAfter("Tue, 14 Nov 2023 22:13:50 GMT", now) == milliseconds(30000));
  CHECK(parseRetryAfter("Tuesday, 14-Nov-23 22:14:20 GMT", now) == milliseconds(60000));
  CHECK(parseRetryAfter("Tue Nov 14 22:13:21 2023", now) == milliseconds(1000));
  CHECK(parseRetryAfter("Wed Nov  1 00:00:00 2023", now) == milliseconds(0));  // one-digit day
  CHECK(parseRetryAfter("Wed, 15 Nov 2023 22:13:20 GMT", now) == milliseconds(86400000));
  CHECK(parseRetryAfter("Thu, 29 Feb 2024 00:00:00 GMT", now) ==
        milliseconds((1709164800LL - 1700000000LL) * 1000));
  // Past: 0.
  CHECK(parseRetryAfter("Sun, 06 Nov 1994 08:49:37 GMT", now) == milliseconds(0));
  CHECK(parseRetryAfter("Sunday, 06-Nov-94 08:49:37 GMT", now) == milliseconds(0));
  CHECK(parseRetryAfter("Sun Nov  6 08:49:37 1994", now) == milliseconds(0));
  // Sub-second "now": the delay is measured from it.
  const auto later = now + milliseconds(250);
  CHECK(parseRetryAfter("Tue, 14 Nov 2023 22:13:30 GMT", later) == milliseconds(9750));
}

TEST_CASE("parseRetryAfter: garbage is empty") {
  const auto now = std::chrono::system_clock::time_point(std::chrono::seconds(1700000000));
  for (const char* bad :
       {"", " ", "soon", "-5", "+5", "1.5", "5s", "0x10", "5 5", "Tue, 14 Nov 2023 22:13:50 UTC",
        "Tue, 14 Nov 2023 22:13:50", "Tue, 14 Nov 2023 22:13:50 GMT x", "Tue, 31 Feb 2023 00:00:00 GMT",
        "Tue, 29 Feb 2023 00:00:00 GMT", "Tue, 14 Foo 2023 22:13:50 GMT", "Tue, 14 Nov 2023 24:00:00 GMT",
        "Tue, 14 Nov 2023 22:61:00 GMT", "Xyz, 14 Nov 2023 22:13:50 GMT", "Tue, 4 Nov 2023 22:13:50 GMT",
        "Someday, 14-Nov-23 22:13:50 GMT", "Tue Nov 14 22:13:21", "Tue Nov 14 22:13:21 23",
        "Tue,", ",", "Tue, 14 Nov 2023 22:13:50 GMT\r\nX: y"}) {
    CAPTURE(bad);
    CHECK_FALSE(parseRetryAfter(bad, now).has_value());
  }
  CHECK_FALSE(parseRetryAfter(std::string_view("1\0", 2), now).has_value());
}

TEST_CASE("retryPolicyFor maps the config and matches safe actions") {
  RetryConfig config;
  config.attempts = 5;
  config.budget = milliseconds(9000);
  config.retry_after_cap = milliseconds(3000);
  config.backoff = milliseconds(150);
  const RetryPolicy list = retryPolicyFor(config, "list_issues");
  CHECK(list.max_attempts == 5);
  CHECK(list.budget == milliseconds(9000));
  CHECK(list.retry_after_cap == milliseconds(3000));
  CHECK(list.base_backoff == milliseconds(150));
  CHECK(list.max_backoff >= list.base_backoff);
  CHECK(list.idempotent);
  CHECK(retryPolicyFor(config, "get_user").idempotent);
  CHECK(retryPolicyFor(config, "search_repos").idempotent);
  CHECK_FALSE(retryPolicyFor(config, "create_issue").idempotent);
  CHECK_FALSE(retryPolicyFor(config, "xlist_issues").idempotent);
  config.safe_actions = {"*"};
  CHECK(retryPolicyFor(config, "create_issue").idempotent);
  config.safe_actions.clear();
  CHECK_FALSE(retryPolicyFor(config, "list_issues").idempotent);
  config.backoff = milliseconds(8000);
  CHECK(retryPolicyFor(config, "a").max_backoff == milliseconds(8000));
}
