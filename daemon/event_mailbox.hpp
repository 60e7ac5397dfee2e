// A command queue into one I/O thread that sleeps in epoll on an eventfd (both upstream clients).
#pragma once

#include <errno.h>
#include <unistd.h>

#include <cstdint>
#include <mutex>
#include <utility>
#include <vector>

namespace keyway::daemon {

// post() wakes the thread only when the queue goes from empty to non-empty: the thread reads
// the eventfd before it takes the queue, so no wakeup is lost. Thread-safe. The eventfd is
// owned by the I/O thread, which closes it only after closeIfEmpty() succeeded.
template <class Command>
class EventMailbox {
 public:
  explicit EventMailbox(int event_fd) : event_fd_(event_fd) {}

  // False once the I/O thread has shut down (the command was not queued).
  bool post(Command command) { return postOrKeep(command); }

  // As post(), but leaves `command` untouched when the mailbox is closed, for the caller to fail.
  bool postOrKeep(Command& command) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_) return false;
    const bool was_empty = queue_.empty();
    queue_.push_back(std::move(command));
    if (was_empty) wakeLocked();
    return true;
  }

  void wake() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!closed_) wakeLocked();
  }

  void take(std::vector<Command>& out) {
    std::lock_guard<std::mutex> lock(mutex_);
    out.swap(queue_);
  }

  // Closes the mailbox if nothing is queued (returns true); otherwise hands the queue over.
  bool closeIfEmpty(std::vector<Command>& out) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (queue_.empty()) {
      closed_ = true;
      return true;
    }
    out.swap(queue_);
    return false;
  }

 private:
  void wakeLocked() {
    const uint64_t one = 1;
    // EAGAIN means the counter is already non-zero: the thread is awake anyway.
    while (::write(event_fd_, &one, sizeof one) < 0 && errno == EINTR) {
    }
  }

  std::mutex mutex_;
  std::vector<Command> queue_;
  bool closed_ = false;
  int event_fd_;
};

}  // namespace keyway::daemon
