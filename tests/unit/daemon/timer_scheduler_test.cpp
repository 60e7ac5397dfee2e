// Unit tests for daemon/timer_scheduler: deadline order, never early, never inline, cancellation
// by stop()/destruction, many timers from many threads, and core::startWithRetries driven by it
// with a client answering on its own thread (real threads, cancels racing the retries).
#include "daemon/timer_scheduler.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

using keyway::daemon::TimerScheduler;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

namespace {

// Counts down to zero; wait() gives up after a timeout so a bug fails instead of hanging.
class Latch {
 public:
  explicit Latch(int count) : count_(count) {}
  void countDown() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (--count_ <= 0) done_.notify_all();
  }
  bool wait(milliseconds timeout = milliseconds(10000)) {
    std::unique_lock<std::mutex> lock(mutex_);
    return done_.wait_for(lock, timeout, [&] { return count_ <= 0; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable done_;
  int count_;
};

}  // namespace

TEST_CASE("TimerScheduler runs callbacks in deadline order, not before their deadline") {
  TimerScheduler scheduler;
  std::mutex mutex;
  std::vector<int> order;
  std::vector<bool> early;
  Latch latch(4);
  const auto t0 = Clock::now();
  for (int delay : {60, 20, 40, 0}) {
    scheduler.after(milliseconds(delay), [&, delay] {
      const bool too_early = Clock::now() < t0 + milliseconds(delay);
      {
        std::lock_guard<std::mutex> lock(mutex);
        order.push_back(delay);
        early.push_back(too_early);
      }
      latch.countDown();
    });
  }
  REQUIRE(latch.wait());
  std::lock_guard<std::mutex> lock(mutex);
  CHECK(order == std::vector<int>{0, 20, 40, 60});
  CHECK(std::none_of(early.begin(), early.end(), [](bool b) { return b; }));
}

TEST_CASE("TimerScheduler: equal delays run first-in first-out, on its own thread") {
  TimerScheduler scheduler;
  std::mutex mutex;
  std::vector<int> order;
  std::vector<std::thread::id> threads;
  Latch latch(200);
  for (int i = 0; i < 200; ++i) {
    scheduler.after(milliseconds(5), [&, i] {
      {
        std::lock_guard<std::mutex> lock(mutex);
        order.push_back(i);
        threads.push_back(std::this_thread::get_id());
      }
      latch.countDown();
    });
  }
  REQUIRE(latch.wait());
  std::lock_guard<std::mutex> lock(mutex);
  REQUIRE(order.size() == 200);
  CHECK(std::is_sorted(order.begin(), order.end()));
  // One thread, and not the caller's: callbacks never run inline in after().
  CHECK(std::all_of(threads.begin(), threads.end(), [&](auto id) { return id == threads[0]; }));
  CHECK((threads[0] != std::this_thread::get_id()));
}

TEST_CASE("TimerScheduler: destruction drops pending callbacks unrun, at once") {
  std::atomic<int> ran{0};
  auto probe = std::make_shared<int>(7);
  std::weak_ptr<int> weak = probe;
  const auto t0 = Clock::now();
  {
    TimerScheduler scheduler;
    for (int i = 0; i < 100; ++i) {
      scheduler.after(milliseconds(10000 + i), [&ran, probe] { ++ran; });
    }
    probe.reset();
    CHECK(scheduler.pending() == 100);
    CHECK_FALSE(weak.expired());  // held by the pending callbacks
  }
  CHECK(Clock::now() - t0 < milliseconds(5000));  // no waiting for the deadlines
  CHECK(ran == 0);
  CHECK(weak.expired());  // the callbacks (and what they hold) were destroyed
}

TEST_CASE("TimerScheduler: stop() waits for a running callback; after() once stopped drops") {
  TimerScheduler scheduler;
  std::atomic<bool> started{false}, finished{false};
  scheduler.after(milliseconds(0), [&] {
    started = true;
    std::this_thread::sleep_for(milliseconds(50));
    finished = true;
  });
  while (!started) std::this_thread::sleep_for(milliseconds(1));
  scheduler.stop();
  CHECK(finished);  // stop() returned only after the callback did
  scheduler.stop();  // idempotent

  auto probe = std::make_shared<int>(1);
  std::weak_ptr<int> weak = probe;
  std::atomic<bool> ran{false};
  scheduler.after(milliseconds(0), [&ran, probe] { ran = true; });
  probe.reset();
  CHECK(weak.expired());  // destroyed at once, never run
  CHECK(scheduler.pending() == 0);
  std::this_thread::sleep_for(milliseconds(20));
  CHECK_FALSE(ran);
}

TEST_CASE("TimerScheduler: many timers from one thread all run, in deadline order") {
  TimerScheduler scheduler;
  constexpr int kTimers = 5000;
  std::mt19937 rng(12345);
  std::uniform_int_distribution<int> delay_ms(0, 60);
  // The scheduler takes timer i's deadline between lo[i] and hi[i] (our clock readings around
  // after()). lo[i] is written before after(), so the callback may read it; hi[i] only here.
  std::vector<Clock::time_point> lo(kTimers), hi(kTimers);
  std::mutex mutex;
  std::vector<int> run_order;
  int early = 0;
  Latch latch(kTimers);
  for (int i = 0; i < kTimers; ++i) {
    const milliseconds delay(delay_ms(rng));
    lo[i] = Clock::now() + delay;
    scheduler.after(delay, [&, i] {
      {
        std::lock_guard<std::mutex> lock(mutex);
        run_order.push_back(i);
        if (Clock::now() < lo[i]) ++early;
      }
      latch.countDown();
    });
    hi[i] = Clock::now() + delay;
  }
  REQUIRE(latch.wait(milliseconds(20000)));
  std::lock_guard<std::mutex> lock(mutex);
  REQUIRE(run_order.size() == static_cast<size_t>(kTimers));
  CHECK(early == 0);
  // Deadline order: no timer ran after one whose deadline was surely later than its own.
  int out_of_order = 0;
  for (size_t k = 1; k < run_order.size(); ++k) {
    if (hi[run_order[k]] < lo[run_order[k - 1]]) ++out_of_order;
  }
  CHECK(out_of_order == 0);
  std::vector<int> sorted = run_order;
  std::sort(sorted.begin(), sorted.end());
  CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());  // each ran once
  CHECK(scheduler.pending() == 0);
}

TEST_CASE("TimerScheduler: concurrent after() from several threads, callbacks that reschedule") {
  TimerScheduler scheduler;
  constexpr int kThreads = 4, kPerThread = 1000, kChain = 50;
  std::atomic<int> ran{0};
  Latch latch(kThreads * kPerThread + kChain);
  std::vector<std::thread> producers;
  for (int t = 0; t < kThreads; ++t) {
    producers.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        scheduler.after(milliseconds((i * 7 + t) % 20), [&] {
          ++ran;
          latch.countDown();
        });
      }
    });
  }
  // A callback may schedule the next one: it runs without the scheduler's lock.
  std::function<void(int)> chain = [&](int left) {
    ++ran;
    latch.countDown();
    if (left > 1) scheduler.after(milliseconds(0), [&, left] { chain(left - 1); });
  };
  scheduler.after(milliseconds(1), [&] { chain(kChain); });
  for (auto& p : producers) p.join();
  REQUIRE(latch.wait(milliseconds(20000)));
  CHECK(ran == kThreads * kPerThread + kChain);
}

TEST_CASE("TimerScheduler: a throwing callback is counted and the others still run") {
  TimerScheduler scheduler;
  Latch latch(1);
  scheduler.after(milliseconds(0), [] { throw std::runtime_error("boom"); });
  scheduler.after(milliseconds(5), [&] { latch.countDown(); });
  REQUIRE(latch.wait());
  CHECK(scheduler.failedCallbacks() == 1);
}

TEST_CASE("TimerScheduler: the last reference dropped inside its own callback") {
  auto scheduler = std::make_shared<TimerScheduler>();
  std::weak_ptr<TimerScheduler> weak = scheduler;
  Latch latch(1);
  scheduler->after(milliseconds(0), [keep = scheduler, &latch]() mutable {
    latch.countDown();
    // `keep` is released by the timer thread after this returns: the destructor runs there.
  });
  scheduler->after(milliseconds(60000), [] {});
  scheduler.reset();
  REQUIRE(latch.wait());
  const auto t0 = Clock::now();
  while (!weak.expired() && Clock::now() - t0 < milliseconds(5000)) {
    std::this_thread::sleep_for(milliseconds(1));
  }
  CHECK(weak.expired());
}

// ---- startWithRetries on real threads ----

namespace {

using namespace keyway::core;

// Answers on one worker thread, like the curl client's I/O thread: the first attempt for each
// URL gets a 429, later ones a 200 whose body is the URL. cancel() is queued like curl's.
class ThreadedClient final : public UpstreamClient {
 public:
  ThreadedClient() : worker_([this] { loop(); }) {}
  ~ThreadedClient() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    worker_.join();
  }

  struct Call final : UpstreamCall {
    void cancel() override { cancelled = true; }
    void resume() override {}
    UpstreamRequest request;
    std::shared_ptr<UpstreamObserver> observer;
    std::atomic<bool> cancelled{false};
  };

  std::shared_ptr<UpstreamCall> start(UpstreamRequest request,
                                      std::shared_ptr<UpstreamObserver> observer) override {
    auto call = std::make_shared<Call>();
    call->request = std::move(request);
    call->observer = std::move(observer);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(call);
    }
    wake_.notify_one();
    return call;
  }

  std::atomic<int> starts{0};

 private:
  void loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      auto call = queue_.front();
      queue_.pop_front();
      const int seen = ++attempts_by_url_[call->request.url];
      lock.unlock();
      ++starts;
      answer(*call, seen == 1 ? 429 : 200);
      lock.lock();
    }
  }

  static void answer(Call& call, int status) {
    auto observer = std::move(call.observer);
    UpstreamOutcome outcome;
    if (call.cancelled) {
      outcome.failure = UpstreamFailure::kCancelled;
      observer->onComplete(outcome);
      return;
    }
    observer->onHeaders(status, "", {});
    std::this_thread::yield();
    if (call.cancelled) {
      outcome.failure = UpstreamFailure::kCancelled;
      outcome.headers_received = true;
      observer->onComplete(outcome);
      return;
    }
    observer->onBody(call.request.url);
    outcome.headers_received = true;
    observer->onComplete(outcome);
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Call>> queue_;
  std::map<std::string, int> attempts_by_url_;
  bool stopping_ = false;
  std::thread worker_;
};

class CountingObserver final : public UpstreamObserver {
 public:
  explicit CountingObserver(Latch& latch) : latch_(latch) {}
  void onHeaders(int s, std::string_view, Headers) override {
    if (completes > 0) ++after_complete;
    status = s;
  }
  bool onBody(std::string_view chunk) override {
    if (completes > 0) ++after_complete;
    body.append(chunk);
    return true;
  }
  void onComplete(const UpstreamOutcome& o) override {
    if (++completes > 1) ++after_complete;
    failure = o.failure;
    latch_.countDown();
  }
  std::atomic<int> completes{0}, after_complete{0};
  int status = 0;
  std::string body;
  UpstreamFailure failure = UpstreamFailure::kNone;

 private:
  Latch& latch_;
};

}  // namespace

TEST_CASE("startWithRetries on TimerScheduler and a threaded client, with racing cancels") {
  auto scheduler = std::make_shared<TimerScheduler>();
  auto client = std::make_shared<ThreadedClient>();
  auto clock = std::make_shared<RealClock>();
  constexpr int kCalls = 300;
  Latch latch(kCalls);
  std::vector<std::shared_ptr<CountingObserver>> observers;
  std::vector<std::shared_ptr<UpstreamCall>> calls;
  RetryPolicy policy;
  policy.base_backoff = milliseconds(1);
  policy.max_backoff = milliseconds(4);
  std::atomic<int> retries{0};
  RetryHooks hooks;
  hooks.on_retry = [&] { ++retries; };
  for (int i = 0; i < kCalls; ++i) {
    UpstreamRequest request;
    request.method = "POST";
    request.url = "http://127.0.0.1:9/call/" + std::to_string(i);
    observers.push_back(std::make_shared<CountingObserver>(latch));
    calls.push_back(startWithRetries(client, scheduler, clock, request, policy, hooks,
                                     observers.back()));
    if (i % 3 == 0) calls.back()->cancel();  // during attempt 1, its wait, or attempt 2
    if (i % 7 == 0) std::this_thread::sleep_for(milliseconds(1));
  }
  REQUIRE(latch.wait(milliseconds(20000)));
  int ok = 0, cancelled = 0;
  for (int i = 0; i < kCalls; ++i) {
    CAPTURE(i);
    const auto& o = *observers[i];
    CHECK(o.completes == 1);
    CHECK(o.after_complete == 0);
    if (o.failure == UpstreamFailure::kNone) {
      ++ok;
      CHECK(o.status == 200);
      CHECK(o.body == "http://127.0.0.1:9/call/" + std::to_string(i));
    } else {
      ++cancelled;
      CHECK(o.failure == UpstreamFailure::kCancelled);
      CHECK(i % 3 == 0);
    }
  }
  CHECK(ok + cancelled == kCalls);
  CHECK(ok >= kCalls * 2 / 3);
  CHECK(retries >= ok);
  calls.clear();
  scheduler->stop();
  // The worker thread may still hold the last attempt (its observer holds the retry state, which
  // holds the client) for a moment after the final completion: wait until this test holds the
  // only reference, so that ~ThreadedClient (which joins the worker) does not run on the worker.
  const auto t0 = std::chrono::steady_clock::now();
  while (client.use_count() > 1 && std::chrono::steady_clock::now() - t0 < milliseconds(5000)) {
    std::this_thread::sleep_for(milliseconds(1));
  }
  CHECK(client.use_count() == 1);
}
