// Retries of upstream exchanges (docs/bosa.md): exponential backoff with jitter,
// Retry-After honoured up to a cap, an overall time budget, and one credential refresh on 401.
// The observer sees exactly one exchange: the one whose response the client gets.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string_view>

#include "core/clock.hpp"
#include "core/config.hpp"
#include "core/http_types.hpp"
#include "core/upstream_client.hpp"

namespace keyway::core {

// Runs callbacks later, off the caller's thread. Implemented in daemon/ with a timer thread
// (daemon::TimerScheduler); tests use a manual one. Thread-safe. Callbacks never run inline
// inside after(). A scheduler that is shutting down may drop callbacks (destroying them unrun).
class Scheduler {
 public:
  virtual ~Scheduler() = default;
  virtual void after(std::chrono::milliseconds delay, std::function<void()> fn) = 0;
};

struct RetryPolicy {
  int max_attempts = 3;                                 // total attempts, >= 1 (1 = no retry)
  std::chrono::milliseconds budget{25000};              // all attempts and waits together; <= 0 = none
  std::chrono::milliseconds retry_after_cap{10000};     // longer Retry-After: the client gets the 429
  std::chrono::milliseconds base_backoff{200};          // wait before retry k: base * 2^k, plus jitter
  std::chrono::milliseconds max_backoff{5000};
  // A retry is only started when the wait before it plus this much still fits in the budget:
  // an attempt with less time than this would only turn a 429/503 into a 504.
  std::chrono::milliseconds min_attempt{250};
  // Read-like request (e.g. BOSA list_*/get_*/search_*): also retried on 5xx and on a connection
  // that failed after the request was sent (reset, timeout, cut-short response). Every request is
  // retried on 429 and on a connection that could not be made.
  bool idempotent = false;
};

// The policy for one BOSA action call from the upstream's `retry:` settings: attempts, budget,
// cap and first backoff as configured, max_backoff max(5 s, backoff), idempotent when `action`
// matches one of safe_actions (globMatch of core/cache_policy.hpp). Pure.
RetryPolicy retryPolicyFor(const RetryConfig& config, std::string_view action);

struct RetryHooks {
  // Called when the upstream answers 401, at most once per startWithRetries(): it may update
  // `request` (e.g. a freshly minted user token) and then calls done(true) to send it once more
  // (not counted as an attempt), or done(false) to hand the 401 to the observer. Optional.
  // Runs on the scheduler's thread; `request` stays valid until done() is called, done() may be
  // called from any thread, later calls are ignored, and dropping done() uncalled counts as
  // done(false). The 401's body is kept (up to 1 MiB) to be replayed on done(false); a longer
  // one ends the call with kResponseTooLarge instead.
  std::function<void(UpstreamRequest& request, std::function<void(bool resend)> done)> on_unauthorized;
  std::function<void()> on_retry;  // each retry (not the 401 resend), for metrics. Optional.
};

// Starts `request` with retries. Attempt 1 starts at once, on the caller's thread; later
// attempts start on the scheduler's thread once the previous attempt has completed.
// Retried, while attempts remain and the wait plus policy.min_attempt fits in the budget:
//  - 429 (any request), and 5xx when policy.idempotent. Retry-After (on 429 and 503) longer than
//    retry_after_cap: not retried, the observer gets that response unchanged; otherwise the wait
//    is max(Retry-After, backoff). backoff = min(base * 2^k, max_backoff) plus a uniform jitter of
//    up to as much again (k = retries so far).
//  - kConnectFailed (any request); kSendFailed, kTimeout, kProtocol when policy.idempotent and
//    the observer has not had onHeaders yet. kTls, kResponseTooLarge, kCancelled never.
// The decision to retry a response is made at its headers: such a response is swallowed (its
// body is read and kept up to 1 MiB, so it can still be handed over if the budget runs out
// while it was read). Everything else streams straight through: onBody chunks and their pause
// result, resume() and cancel() reach the current attempt.
// The returned call's cancel() cancels the current attempt or a pending wait (the observer then
// gets onComplete(kCancelled)); resume() forwards to the current attempt. Each attempt's
// total_timeout is min(request.total_timeout (0 = none), budget left). Never blocks.
// The observer gets onHeaders at most once, then onBody, then onComplete exactly once, never two
// at a time and nothing after onComplete. They come from the client's thread, or from the
// scheduler's thread for a replayed 401 and for a cancel during a wait (so with a scheduler that
// drops callbacks at shutdown, a call cancelled while waiting may never complete).
// onComplete's elapsed covers the whole call and headers_received says whether the observer got
// onHeaders. Every pointer must be non-null.
std::shared_ptr<UpstreamCall> startWithRetries(std::shared_ptr<UpstreamClient> client,
                                               std::shared_ptr<Scheduler> scheduler,
                                               std::shared_ptr<Clock> clock, UpstreamRequest request,
                                               RetryPolicy policy, RetryHooks hooks,
                                               std::shared_ptr<UpstreamObserver> observer);

// The delay a Retry-After value asks for (RFC 9110 §10.2.3): delta-seconds or an HTTP-date
// (IMF-fixdate, and the obsolete RFC 850 and asctime forms) relative to `now`. Empty when the
// value is malformed. A date in the past is 0; huge values saturate at about 31 years. Pure.
std::optional<std::chrono::milliseconds> parseRetryAfter(std::string_view value,
                                                         std::chrono::system_clock::time_point now);

}  // namespace keyway::core
