// The timer thread behind core::Scheduler: sleeps until the earliest deadline, runs what is due.
#include "daemon/timer_scheduler.hpp"

#include <algorithm>
#include <utility>

namespace keyway::daemon {

TimerScheduler::TimerScheduler()
    : state_(std::make_shared<State>()), thread_([state = state_] { run(state); }) {}

TimerScheduler::~TimerScheduler() { stop(); }

void TimerScheduler::after(std::chrono::milliseconds delay, std::function<void()> fn) {
  if (!fn) return;
  const auto deadline =
      std::chrono::steady_clock::now() + std::max(delay, std::chrono::milliseconds(0));
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    if (!state_->stopping) {
      auto& heap = state_->heap;
      const bool earliest = heap.empty() || heap.front().deadline > deadline;
      heap.push_back(Timer{deadline, state_->next_sequence++, std::move(fn)});
      std::push_heap(heap.begin(), heap.end(), Later{});
      // Only a new earliest deadline changes how long the thread must sleep.
      if (earliest) state_->wake.notify_one();
      return;
    }
  }
  // Stopped: `fn` is destroyed here, outside the lock (its captures may call after()).
}

void TimerScheduler::stop() {
  std::vector<Timer> dropped;
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->stopping = true;
    dropped.swap(state_->heap);
  }
  state_->wake.notify_all();
  {
    std::lock_guard<std::mutex> lock(stop_mutex_);
    if (thread_.joinable()) {
      // On the timer thread itself (a callback released the last reference to us) joining
      // would deadlock: let it finish the callback and exit on its own.
      if (thread_.get_id() == std::this_thread::get_id()) {
        thread_.detach();
      } else {
        thread_.join();
      }
    }
  }
  dropped.clear();  // destroy the pending callbacks unrun, without the lock
}

size_t TimerScheduler::pending() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->heap.size();
}

uint64_t TimerScheduler::failedCallbacks() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->failed;
}

void TimerScheduler::run(const std::shared_ptr<State>& state) {
  std::unique_lock<std::mutex> lock(state->mutex);
  while (!state->stopping) {
    auto& heap = state->heap;
    if (heap.empty()) {
      state->wake.wait(lock);
      continue;
    }
    const auto deadline = heap.front().deadline;
    if (std::chrono::steady_clock::now() < deadline) {
      // Woken early by a new earliest timer or stop(); the loop re-reads the heap either way.
      state->wake.wait_until(lock, deadline);
      continue;
    }
    std::pop_heap(heap.begin(), heap.end(), Later{});
    std::function<void()> fn = std::move(heap.back().fn);
    heap.pop_back();
    lock.unlock();
    bool threw = false;
    try {
      fn();
    } catch (...) {
      threw = true;  // one bad callback must not take every other timer down with it
    }
    fn = nullptr;  // captures released outside the lock (they may call after() or stop())
    lock.lock();
    if (threw) ++state->failed;
  }
}

}  // namespace keyway::daemon
