// core::Scheduler on one timer thread: a min-heap of deadlines and a condition variable.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "core/retry.hpp"

namespace keyway::daemon {

// Contract: core::Scheduler (core/retry.hpp). Callbacks run one at a time on the scheduler's own
// thread, in deadline order (FIFO for equal deadlines), never inline inside after(), never under
// the scheduler's lock (so they may call after() again). Deadlines use std::chrono::steady_clock;
// a negative delay counts as 0. Callbacks must not block for long: they delay every other timer.
// An exception escaping a callback is swallowed and counted (the thread keeps going).
// Lifetime: stop() (idempotent; also called by the destructor) wakes the thread, waits for a
// callback in progress to return, joins, and destroys every pending callback unrun. after()
// once stopped destroys its callback at once. Callbacks are destroyed outside the lock.
// stop() or the destructor may also run on the timer thread itself (a callback dropping the last
// reference to the scheduler): then the thread is detached and exits once that callback returns.
// Thread-safety: every member is thread-safe.
class TimerScheduler final : public core::Scheduler {
 public:
  TimerScheduler();
  ~TimerScheduler() override;

  TimerScheduler(const TimerScheduler&) = delete;
  TimerScheduler& operator=(const TimerScheduler&) = delete;

  void after(std::chrono::milliseconds delay, std::function<void()> fn) override;
  void stop();

  size_t pending() const;         // callbacks waiting for their deadline
  uint64_t failedCallbacks() const;  // callbacks that threw

 private:
  struct Timer {
    std::chrono::steady_clock::time_point deadline;
    uint64_t sequence;  // tie-break: equal deadlines run in the order they were added
    std::function<void()> fn;
  };
  // std::push_heap builds a max-heap: "less" means "later".
  struct Later {
    bool operator()(const Timer& a, const Timer& b) const {
      if (a.deadline != b.deadline) return a.deadline > b.deadline;
      return a.sequence > b.sequence;
    }
  };
  // Shared with the thread, so a thread detached by a destructor running on it stays valid.
  struct State {
    std::mutex mutex;
    std::condition_variable wake;
    std::vector<Timer> heap;  // guarded by mutex
    uint64_t next_sequence = 0;
    uint64_t failed = 0;
    bool stopping = false;
  };

  static void run(const std::shared_ptr<State>& state);

  std::shared_ptr<State> state_;
  std::mutex stop_mutex_;  // serialises stop() callers around join()
  std::thread thread_;     // last: started once state_ exists
};

}  // namespace keyway::daemon
