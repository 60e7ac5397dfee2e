// Retries of upstream exchanges: one RetryCall per startWithRetries(), one AttemptObserver per
// attempt, and the Retry-After parser.
#include "core/retry.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <iterator>
#include <mutex>
#include <random>
#include <string>
#include <utility>

#include "core/cache_policy.hpp"
#include "core/text.hpp"

namespace keyway::core {

namespace {

using std::chrono::milliseconds;

// What a swallowed response may keep for a later replay. 401/429/5xx bodies are short error
// documents; a bound keeps a hostile upstream from growing memory while we wait.
constexpr size_t kReplayLimit = size_t{1} << 20;
// Retry-After delta-seconds beyond this are treated as this (about 31 years): no overflow.
constexpr int64_t kMaxRetryAfterSeconds = 1'000'000'000;

milliseconds jitteredBackoff(const RetryPolicy& policy, int retries_so_far) {
  const int64_t base = std::max<int64_t>(policy.base_backoff.count(), 0);
  const int64_t cap = std::max<int64_t>(policy.max_backoff.count(), 0);
  int64_t backoff = base;
  for (int k = 0; k < retries_so_far && backoff < cap; ++k) backoff *= 2;  // saturates at cap
  backoff = std::min(backoff, cap);
  if (backoff <= 0) return milliseconds(0);
  // Full jitter on top of the exponential step spreads clients that were rejected together.
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_int_distribution<int64_t> jitter(0, backoff);
  return milliseconds(backoff + jitter(rng));
}

bool isRetryableFailure(UpstreamFailure failure, bool idempotent) {
  switch (failure) {
    case UpstreamFailure::kConnectFailed:
      return true;  // nothing reached the upstream: safe for any request
    case UpstreamFailure::kSendFailed:
    case UpstreamFailure::kTimeout:
    case UpstreamFailure::kProtocol:
      return idempotent;  // the upstream may have acted on it
    case UpstreamFailure::kNone:
    case UpstreamFailure::kTls:
    case UpstreamFailure::kResponseTooLarge:
    case UpstreamFailure::kCancelled:
      return false;
  }
  return false;
}

class RetryCall;

// Forwards one attempt's events to its RetryCall, tagged with the attempt's id so that a late
// event of an earlier attempt can never reach the observer.
class AttemptObserver final : public UpstreamObserver {
 public:
  AttemptObserver(std::shared_ptr<RetryCall> owner, uint64_t id) : owner_(std::move(owner)), id_(id) {}
  void onHeaders(int status, std::string_view reason, Headers headers) override;
  bool onBody(std::string_view chunk) override;
  void onComplete(const UpstreamOutcome& outcome) override;

 private:
  std::shared_ptr<RetryCall> owner_;  // dropped after onComplete: the client may keep us longer
  uint64_t id_;
};

class RetryCall final : public UpstreamCall, public std::enable_shared_from_this<RetryCall> {
 public:
  RetryCall(std::shared_ptr<UpstreamClient> client, std::shared_ptr<Scheduler> scheduler,
            std::shared_ptr<Clock> clock, UpstreamRequest request, RetryPolicy policy,
            RetryHooks hooks, std::shared_ptr<UpstreamObserver> observer)
      : client_(std::move(client)),
        scheduler_(std::move(scheduler)),
        clock_(std::move(clock)),
        policy_(std::move(policy)),
        hooks_(std::move(hooks)),
        observer_(std::move(observer)),
        request_(std::move(request)) {
    policy_.max_attempts = std::max(policy_.max_attempts, 1);
    started_ = clock_->monotonicNow();
  }

  void startFirst() { startAttempt(/*counted=*/true); }

  void cancel() override {
    std::shared_ptr<UpstreamCall> attempt;
    bool post_finish = false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (phase_ == Phase::kDone || cancel_requested_) return;
      cancel_requested_ = true;
      switch (phase_) {
        case Phase::kAttempt:
          attempt = current_;  // null while start() runs: startAttempt() cancels it afterwards
          break;
        case Phase::kWaiting:
        case Phase::kAwaitingHook:
        case Phase::kReplaying:
          // Not inline: the caller may hold locks its own onComplete takes.
          post_finish = true;
          break;
        case Phase::kDone:
          break;
      }
    }
    if (attempt) attempt->cancel();
    if (post_finish) {
      auto self = shared_from_this();
      scheduler_->after(milliseconds(0), [self] { self->finishIfCancelledBetweenAttempts(); });
    }
  }

  void resume() override {
    std::shared_ptr<UpstreamCall> attempt;
    bool post_replay_end = false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (phase_ == Phase::kAttempt) {
        attempt = current_;
      } else if (phase_ == Phase::kReplaying && replay_paused_) {
        replay_paused_ = false;
        post_replay_end = true;
      }
    }
    if (attempt) attempt->resume();
    if (post_replay_end) {
      auto self = shared_from_this();
      scheduler_->after(milliseconds(0), [self] { self->endReplay(); });
    }
  }

  // ---- events of the current attempt (client's thread) ----

  void attemptHeaders(uint64_t id, int status, std::string_view reason, Headers headers) {
    std::shared_ptr<UpstreamObserver> observer;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (id != attempt_id_ || phase_ != Phase::kAttempt) return;
      mode_ = decideAtHeaders(status, headers);
      if (mode_ == Mode::kPassThrough) {
        observer_got_headers_ = true;
        observer = observer_;
      } else {
        held_status_ = status;
        held_reason_ = std::string(reason);
        held_headers_ = std::move(headers);
        held_body_.clear();
        held_overflow_ = false;
      }
    }
    if (observer) observer->onHeaders(status, reason, std::move(headers));
  }

  bool attemptBody(uint64_t id, std::string_view chunk) {
    std::shared_ptr<UpstreamObserver> observer;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      if (id != attempt_id_ || phase_ != Phase::kAttempt) return true;
      if (mode_ == Mode::kHold && held_body_.size() + chunk.size() > kReplayLimit) {
        // Too large to hold: hand over what there is and stream the rest (no retry after this).
        mode_ = Mode::kPassThrough;
        observer_got_headers_ = true;
        observer = observer_;
        const int status = held_status_;
        std::string reason = std::move(held_reason_);
        Headers headers = std::move(held_headers_);
        std::string held = std::move(held_body_);
        lock.unlock();
        observer->onHeaders(status, reason, std::move(headers));
        bool more = held.empty() || observer->onBody(held);
        more = observer->onBody(chunk) && more;
        return more;
      }
      if (mode_ != Mode::kPassThrough) {
        if (!held_overflow_ && held_body_.size() + chunk.size() <= kReplayLimit) {
          held_body_.append(chunk);
        } else {
          held_overflow_ = true;  // keep reading (and dropping) so the connection stays usable
          held_body_.clear();
          held_body_.shrink_to_fit();
        }
        return true;
      }
      observer = observer_;
    }
    return observer->onBody(chunk);
  }

  void attemptComplete(uint64_t id, const UpstreamOutcome& outcome) {
    auto self = shared_from_this();
    Action action;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (id != attempt_id_ || phase_ != Phase::kAttempt) return;
      current_.reset();
      last_outcome_ = outcome;
      action = decideAtComplete(outcome);
    }
    run(std::move(action));
  }

 private:
  enum class Phase { kAttempt, kWaiting, kAwaitingHook, kReplaying, kDone };
  // What the current attempt's response is for: the observer, a retry, or the 401 hook.
  // kHold: a read-like request's response that is not itself retryable (a 2xx, say) is held until
  // it is complete, so that a connection failing mid-response can still be retried (docs/bosa.md);
  // past kReplayLimit it is handed over as it streams and is no longer retryable.
  enum class Mode { kPassThrough, kSwallowRetry, kSwallow401, kHold };

  // Work decided under the lock and carried out after it is released (observer callbacks,
  // scheduler posts and client calls never run under mutex_).
  struct Action {
    enum Kind { kNothing, kFinish, kSchedule, kReplay, kCallHook } kind = kNothing;
    UpstreamOutcome outcome;           // kFinish
    std::shared_ptr<UpstreamObserver> observer;  // kFinish
    milliseconds delay{0};             // kSchedule
    uint64_t wait_id = 0;              // kSchedule, kCallHook
    bool counted = true;               // kSchedule: a retry (not the 401 resend)
  };

  // ---- decisions (mutex_ held) ----

  milliseconds elapsedLocked() const {
    return std::chrono::duration_cast<milliseconds>(clock_->monotonicNow() - started_);
  }

  bool budgetLimited() const { return policy_.budget.count() > 0; }

  // Whether waiting `wait` and then running a minimal attempt stays within the budget.
  bool fitsBudget(milliseconds wait) const {
    if (!budgetLimited()) return true;
    return elapsedLocked() + wait + policy_.min_attempt <= policy_.budget;
  }

  bool attemptsLeft() const { return attempts_started_ < policy_.max_attempts; }

  Mode decideAtHeaders(int status, const Headers& headers) {
    if (status == 401 && hooks_.on_unauthorized && !reauth_used_) return Mode::kSwallow401;
    const bool retryable =
        status == 429 || (policy_.idempotent && status >= 500 && status <= 599);
    if (!retryable) return policy_.idempotent && attemptsLeft() ? Mode::kHold : Mode::kPassThrough;
    if (!attemptsLeft()) return Mode::kPassThrough;
    milliseconds wait = jitteredBackoff(policy_, retries_);
    // Retry-After is defined for 503 as well as 429 (RFC 9110 §10.2.3): honour it on both.
    if (status == 429 || status == 503) {
      if (auto value = headerValue(headers, "Retry-After")) {
        if (auto asked = parseRetryAfter(*value, clock_->systemNow())) {
          if (*asked > policy_.retry_after_cap) return Mode::kPassThrough;
          wait = std::max(wait, *asked);
        }
      }
    }
    if (!fitsBudget(wait)) return Mode::kPassThrough;
    pending_wait_ = wait;
    return Mode::kSwallowRetry;
  }

  Action decideAtComplete(const UpstreamOutcome& outcome) {
    if (cancel_requested_) {
      // Never another attempt. A response the observer is already reading ends as it ended.
      if (mode_ == Mode::kPassThrough) return finishLocked(outcome);
      return finishLocked(cancelledOutcome());
    }
    switch (mode_) {
      case Mode::kSwallowRetry:
        // Decided at the headers; the body may have taken long enough to spend the budget.
        if (fitsBudget(pending_wait_)) return scheduleLocked(pending_wait_, true);
        return giveUpLocked();
      case Mode::kSwallow401:
        if (outcome.failure == UpstreamFailure::kNone) {
          reauth_used_ = true;
          phase_ = Phase::kAwaitingHook;
          Action action;
          action.kind = Action::kCallHook;
          action.wait_id = ++wait_id_;
          return action;
        }
        // A 401 cut short: nothing reached the observer, so it is an ordinary failure.
        return failureLocked(outcome);
      case Mode::kHold:
        if (outcome.failure == UpstreamFailure::kNone) return giveUpLocked();  // replays it whole
        return failureLocked(outcome);  // nothing reached the observer: retry if allowed
      case Mode::kPassThrough:
        if (outcome.failure == UpstreamFailure::kNone || observer_got_headers_) {
          return finishLocked(outcome);
        }
        return failureLocked(outcome);
    }
    return finishLocked(outcome);
  }

  // A failed attempt whose failure has not reached the observer: retry or hand it over.
  Action failureLocked(const UpstreamOutcome& outcome) {
    if (isRetryableFailure(outcome.failure, policy_.idempotent) && attemptsLeft()) {
      const milliseconds wait = jitteredBackoff(policy_, retries_);
      if (fitsBudget(wait)) return scheduleLocked(wait, true);
    }
    return finishLocked(outcome);
  }

  // Hands the observer what there is when no further attempt will run: the swallowed response
  // if one was kept, else the last failure.
  Action giveUpLocked() {
    if (mode_ != Mode::kPassThrough && !held_overflow_) {
      phase_ = Phase::kReplaying;
      Action action;
      action.kind = Action::kReplay;
      return action;
    }
    if (mode_ != Mode::kPassThrough) {
      UpstreamOutcome too_large;
      too_large.failure = UpstreamFailure::kResponseTooLarge;
      too_large.message = "the upstream's " + std::to_string(held_status_) +
                          " response was not retried and is too large to hand over (over 1 MiB)";
      return finishLocked(too_large);
    }
    return finishLocked(last_outcome_);
  }

  Action scheduleLocked(milliseconds delay, bool counted) {
    phase_ = Phase::kWaiting;
    Action action;
    action.kind = Action::kSchedule;
    action.delay = delay;
    action.counted = counted;
    action.wait_id = ++wait_id_;
    return action;
  }

  Action finishLocked(UpstreamOutcome outcome) {
    phase_ = Phase::kDone;
    outcome.elapsed = std::chrono::duration_cast<std::chrono::microseconds>(
        clock_->monotonicNow() - started_);
    outcome.headers_received = observer_got_headers_;
    Action action;
    action.kind = Action::kFinish;
    action.outcome = std::move(outcome);
    // Drop our references now: the observer (the gateway) usually holds this call, and the hooks
    // may capture anything; keeping them would make a cycle.
    action.observer = std::move(observer_);
    hooks_ = RetryHooks{};
    held_body_.clear();
    return action;
  }

  UpstreamOutcome cancelledOutcome() const {
    UpstreamOutcome cancelled;
    cancelled.failure = UpstreamFailure::kCancelled;
    cancelled.message = "cancelled";
    return cancelled;
  }

  // ---- carrying actions out (no lock held) ----

  void run(Action action) {
    auto self = shared_from_this();
    switch (action.kind) {
      case Action::kNothing:
        return;
      case Action::kFinish:
        if (action.observer) action.observer->onComplete(action.outcome);
        return;
      case Action::kSchedule: {
        const uint64_t wait_id = action.wait_id;
        const bool counted = action.counted;
        scheduler_->after(action.delay, [self, wait_id, counted] { self->waitOver(wait_id, counted); });
        return;
      }
      case Action::kReplay:
        scheduler_->after(milliseconds(0), [self] { self->replay(); });
        return;
      case Action::kCallHook: {
        const uint64_t wait_id = action.wait_id;
        scheduler_->after(milliseconds(0), [self, wait_id] { self->callHook(wait_id); });
        return;
      }
    }
  }

  void startAttempt(bool counted) {
    auto self = shared_from_this();
    UpstreamRequest request;
    uint64_t id = 0;
    bool notify_retry = false;
    std::function<void()> on_retry;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      id = ++attempt_id_;
      if (counted) {
        notify_retry = attempts_started_ > 0;
        if (notify_retry) ++retries_;
        ++attempts_started_;
      }
      phase_ = Phase::kAttempt;
      mode_ = Mode::kPassThrough;
      held_headers_.clear();
      held_body_.clear();
      held_overflow_ = false;
      request = request_;  // kept: a later attempt sends it again
      if (budgetLimited()) {
        const milliseconds left = std::max(policy_.budget - elapsedLocked(), milliseconds(1));
        if (request.total_timeout.count() <= 0 || request.total_timeout > left) {
          request.total_timeout = left;
        }
      }
      if (notify_retry) on_retry = hooks_.on_retry;
    }
    if (on_retry) on_retry();
    auto call = client_->start(std::move(request), std::make_shared<AttemptObserver>(self, id));
    bool cancel_now = false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      // The attempt may already have completed inside start().
      if (id == attempt_id_ && phase_ == Phase::kAttempt) {
        current_ = call;
        cancel_now = cancel_requested_;
      }
    }
    if (cancel_now && call) call->cancel();
  }

  // A retry's wait (or the 401 resend's zero wait) is over: start the attempt or give up.
  void waitOver(uint64_t wait_id, bool counted) {
    Action action;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (phase_ != Phase::kWaiting || wait_id != wait_id_) return;
      if (cancel_requested_) {
        action = finishLocked(cancelledOutcome());
      } else if (budgetLimited() && elapsedLocked() >= policy_.budget) {
        // The timer fired far too late (a stalled scheduler): no time left for an attempt.
        action = giveUpLocked();
      }
    }
    if (action.kind != Action::kNothing) return run(std::move(action));
    startAttempt(counted);
  }

  void callHook(uint64_t wait_id) {
    std::function<void(UpstreamRequest&, std::function<void(bool)>)> hook;
    Action action;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (phase_ != Phase::kAwaitingHook || wait_id != wait_id_) return;
      if (cancel_requested_) {
        action = finishLocked(cancelledOutcome());
      } else {
        hook = hooks_.on_unauthorized;
      }
    }
    if (!hook) return run(std::move(action));
    // Exactly one answer per hook call, also when the hook drops `done` without calling it.
    struct Once {
      std::shared_ptr<RetryCall> call;
      uint64_t wait_id;
      std::atomic<bool> answered{false};
      void answer(bool resend) {
        if (!answered.exchange(true)) call->hookDone(wait_id, resend);
      }
      ~Once() { answer(false); }
    };
    auto once = std::make_shared<Once>();
    once->call = shared_from_this();
    once->wait_id = wait_id;
    // The hook may edit request_: nothing else reads or writes it while phase_ is kAwaitingHook.
    hook(request_, [once](bool resend) { once->answer(resend); });
  }

  void hookDone(uint64_t wait_id, bool resend) {
    Action action;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (phase_ != Phase::kAwaitingHook || wait_id != wait_id_) return;
      if (cancel_requested_) {
        action = finishLocked(cancelledOutcome());
      } else if (resend && fitsBudget(milliseconds(0))) {
        // Not inline: done() may be called from inside another client's callback.
        action = scheduleLocked(milliseconds(0), /*counted=*/false);
      } else {
        action = giveUpLocked();
      }
    }
    run(std::move(action));
  }

  // Hands the swallowed response to the observer: headers, body, then (unless the observer
  // paused) the completion.
  void replay() {
    std::shared_ptr<UpstreamObserver> observer;
    int status = 0;
    std::string reason, body;
    Headers headers;
    Action cancelled;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (phase_ != Phase::kReplaying || replay_started_) return;
      if (cancel_requested_) cancelled = finishLocked(cancelledOutcome());
    }
    if (cancelled.kind != Action::kNothing) return run(std::move(cancelled));
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (phase_ != Phase::kReplaying || replay_started_) return;
      replay_started_ = true;
      replay_active_ = true;
      observer_got_headers_ = true;
      observer = observer_;
      status = held_status_;
      reason = std::move(held_reason_);
      headers = std::move(held_headers_);
      body = std::move(held_body_);
    }
    observer->onHeaders(status, reason, std::move(headers));
    bool more = true;
    if (!body.empty() && !cancelRequested()) more = observer->onBody(body);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      replay_active_ = false;
      if (!more && !cancel_requested_) {
        replay_paused_ = true;  // resume() posts endReplay()
        return;
      }
    }
    endReplay();
  }

  void endReplay() {
    Action action;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (phase_ != Phase::kReplaying || replay_active_) return;
      if (replay_paused_ && !cancel_requested_) return;  // resume() will post us again
      action = finishLocked(cancel_requested_ ? cancelledOutcome() : last_outcome_);
    }
    run(std::move(action));
  }

  // Posted by cancel() when no attempt was running.
  void finishIfCancelledBetweenAttempts() {
    Action action;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!cancel_requested_) return;
      if (phase_ == Phase::kReplaying) {
        // A replay not yet begun finishes in replay(); one in progress checks the flag itself.
        if (replay_active_ || !replay_started_) return;
      } else if (phase_ != Phase::kWaiting && phase_ != Phase::kAwaitingHook) {
        return;
      }
      action = finishLocked(cancelledOutcome());
    }
    run(std::move(action));
  }

  bool cancelRequested() {
    std::lock_guard<std::mutex> lock(mutex_);
    return cancel_requested_;
  }

  const std::shared_ptr<UpstreamClient> client_;
  const std::shared_ptr<Scheduler> scheduler_;
  const std::shared_ptr<Clock> clock_;
  RetryPolicy policy_;
  std::chrono::steady_clock::time_point started_;

  std::mutex mutex_;
  RetryHooks hooks_;                               // cleared once finished
  std::shared_ptr<UpstreamObserver> observer_;     // null once finished
  UpstreamRequest request_;                        // what each attempt sends
  Phase phase_ = Phase::kAttempt;
  Mode mode_ = Mode::kPassThrough;
  uint64_t attempt_id_ = 0;                        // current attempt, 401 resends included
  uint64_t wait_id_ = 0;                           // current wait or hook call
  int attempts_started_ = 0;                       // counted against max_attempts
  int retries_ = 0;                                // backoff exponent
  bool reauth_used_ = false;
  bool cancel_requested_ = false;
  bool observer_got_headers_ = false;
  std::shared_ptr<UpstreamCall> current_;          // the attempt in flight, if known yet
  milliseconds pending_wait_{0};                   // kSwallowRetry: wait decided at the headers
  UpstreamOutcome last_outcome_;
  // The swallowed response (kSwallowRetry, kSwallow401).
  int held_status_ = 0;
  std::string held_reason_;
  Headers held_headers_;
  std::string held_body_;
  bool held_overflow_ = false;
  bool replay_started_ = false;
  bool replay_active_ = false;   // replay() is calling the observer
  bool replay_paused_ = false;   // the observer paused the replayed body
};

void AttemptObserver::onHeaders(int status, std::string_view reason, Headers headers) {
  if (owner_) owner_->attemptHeaders(id_, status, reason, std::move(headers));
}

bool AttemptObserver::onBody(std::string_view chunk) {
  return owner_ ? owner_->attemptBody(id_, chunk) : true;
}

void AttemptObserver::onComplete(const UpstreamOutcome& outcome) {
  auto owner = std::move(owner_);
  if (owner) owner->attemptComplete(id_, outcome);
}

// ---- Retry-After ----

constexpr std::string_view kWeekdaysShort[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
constexpr std::string_view kWeekdaysLong[] = {"Monday", "Tuesday",  "Wednesday", "Thursday",
                                              "Friday", "Saturday", "Sunday"};
constexpr std::string_view kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

// Reads exactly `n` digits at `pos`.
bool readDigits(std::string_view s, size_t& pos, size_t n, int& out) {
  if (pos + n > s.size()) return false;
  int v = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!isDigit(s[pos + i])) return false;
    v = v * 10 + (s[pos + i] - '0');
  }
  pos += n;
  out = v;
  return true;
}

bool expect(std::string_view s, size_t& pos, std::string_view what) {
  if (s.substr(pos, what.size()) != what) return false;
  pos += what.size();
  return true;
}

bool readMonth(std::string_view s, size_t& pos, int& month) {
  for (int m = 0; m < 12; ++m) {
    if (s.substr(pos, 3) == kMonths[m]) {
      month = m + 1;
      pos += 3;
      return true;
    }
  }
  return false;
}

// hh:mm:ss
bool readTime(std::string_view s, size_t& pos, int& h, int& mi, int& sec) {
  return readDigits(s, pos, 2, h) && expect(s, pos, ":") && readDigits(s, pos, 2, mi) &&
         expect(s, pos, ":") && readDigits(s, pos, 2, sec);
}

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
int64_t daysFromCivil(int64_t y, int m, int d) {
  y -= m <= 2 ? 1 : 0;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

bool validDate(int year, int month, int day, int h, int mi, int sec) {
  static constexpr std::array<int, 12> kDays = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (month < 1 || month > 12 || day < 1 || day > kDays[month - 1]) return false;
  const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  if (month == 2 && day == 29 && !leap) return false;
  return h <= 23 && mi <= 59 && sec <= 60;  // 60: a leap second, as RFC 5322 allows
}

// Parses the three HTTP-date forms of RFC 9110 §5.6.7 into seconds since the epoch.
std::optional<int64_t> parseHttpDate(std::string_view s) {
  int year = 0, month = 0, day = 0, h = 0, mi = 0, sec = 0;
  size_t pos = 0;
  const size_t comma = s.find(',');
  if (comma == 3) {
    // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
    if (std::find(std::begin(kWeekdaysShort), std::end(kWeekdaysShort), s.substr(0, 3)) ==
        std::end(kWeekdaysShort)) {
      return std::nullopt;
    }
    pos = 4;
    if (!expect(s, pos, " ") || !readDigits(s, pos, 2, day) || !expect(s, pos, " ") ||
        !readMonth(s, pos, month) || !expect(s, pos, " ") || !readDigits(s, pos, 4, year) ||
        !expect(s, pos, " ") || !readTime(s, pos, h, mi, sec) || !expect(s, pos, " GMT")) {
      return std::nullopt;
    }
  } else if (comma != std::string_view::npos) {
    // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
    if (std::find(std::begin(kWeekdaysLong), std::end(kWeekdaysLong), s.substr(0, comma)) ==
        std::end(kWeekdaysLong)) {
      return std::nullopt;
    }
    pos = comma + 1;
    int yy = 0;
    if (!expect(s, pos, " ") || !readDigits(s, pos, 2, day) || !expect(s, pos, "-") ||
        !readMonth(s, pos, month) || !expect(s, pos, "-") || !readDigits(s, pos, 2, yy) ||
        !expect(s, pos, " ") || !readTime(s, pos, h, mi, sec) || !expect(s, pos, " GMT")) {
      return std::nullopt;
    }
    // Two-digit years: RFC 9110 says to read them as the most recent past year with those
    // digits when they would be more than 50 years ahead; for a Retry-After, 19xx/20xx by
    // the usual pivot is as good and keeps this pure.
    year = yy < 70 ? 2000 + yy : 1900 + yy;
  } else {
    // asctime: Sun Nov  6 08:49:37 1994
    if (std::find(std::begin(kWeekdaysShort), std::end(kWeekdaysShort), s.substr(0, 3)) ==
        std::end(kWeekdaysShort)) {
      return std::nullopt;
    }
    pos = 3;
    if (!expect(s, pos, " ") || !readMonth(s, pos, month) || !expect(s, pos, " ")) {
      return std::nullopt;
    }
    if (pos < s.size() && s[pos] == ' ') {
      ++pos;
      if (!readDigits(s, pos, 1, day)) return std::nullopt;
    } else if (!readDigits(s, pos, 2, day)) {
      return std::nullopt;
    }
    if (!expect(s, pos, " ") || !readTime(s, pos, h, mi, sec) || !expect(s, pos, " ") ||
        !readDigits(s, pos, 4, year)) {
      return std::nullopt;
    }
  }
  if (pos != s.size() || !validDate(year, month, day, h, mi, sec)) return std::nullopt;
  return daysFromCivil(year, month, day) * 86400 + h * 3600 + mi * 60 + sec;
}

}  // namespace

RetryPolicy retryPolicyFor(const RetryConfig& config, std::string_view action) {
  RetryPolicy policy;
  policy.max_attempts = std::max(config.attempts, 1);
  policy.budget = config.budget;
  policy.retry_after_cap = config.retry_after_cap;
  policy.base_backoff = config.backoff;
  policy.max_backoff = std::max(policy.max_backoff, config.backoff);
  policy.idempotent = std::any_of(config.safe_actions.begin(), config.safe_actions.end(),
                                  [&](const std::string& glob) { return globMatch(glob, action); });
  return policy;
}

std::shared_ptr<UpstreamCall> startWithRetries(std::shared_ptr<UpstreamClient> client,
                                               std::shared_ptr<Scheduler> scheduler,
                                               std::shared_ptr<Clock> clock, UpstreamRequest request,
                                               RetryPolicy policy, RetryHooks hooks,
                                               std::shared_ptr<UpstreamObserver> observer) {
  auto call = std::make_shared<RetryCall>(std::move(client), std::move(scheduler), std::move(clock),
                                          std::move(request), std::move(policy), std::move(hooks),
                                          std::move(observer));
  call->startFirst();
  return call;
}

std::optional<std::chrono::milliseconds> parseRetryAfter(std::string_view value,
                                                         std::chrono::system_clock::time_point now) {
  // Field values may carry optional whitespace around them.
  value = trimOws(value);
  if (value.empty()) return std::nullopt;
  if (isDigits(value)) {
    int64_t seconds = 0;
    for (const char c : value) {
      seconds = seconds * 10 + (c - '0');
      if (seconds > kMaxRetryAfterSeconds) {
        seconds = kMaxRetryAfterSeconds;
        break;
      }
    }
    return std::chrono::duration_cast<milliseconds>(std::chrono::seconds(seconds));
  }
  const auto date = parseHttpDate(value);
  if (!date) return std::nullopt;
  const int64_t now_ms =
      std::chrono::duration_cast<milliseconds>(now.time_since_epoch()).count();
  const int64_t delta = *date * 1000 - now_ms;
  if (delta <= 0) return milliseconds(0);
  return milliseconds(std::min<int64_t>(delta, kMaxRetryAfterSeconds * 1000));
}

}  // namespace keyway::core
