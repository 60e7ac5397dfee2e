// HostedClient: runs an upstream client's ReactorGuest loops on test "reactor" threads, the way
// keywayd's listener hosts them (daemon/guest_transport.cpp), for the shared client cases.
#pragma once

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <atomic>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "core/upstream_client.hpp"
#include "daemon/reactor_guest.hpp"

namespace keyway::testing {

using daemon::ReactorGuest;

using core::UpstreamRequest;

// A client with options.hosted, its loops run by "reactor" threads as keywayd's listener runs them (daemon/guest_transport.cpp): each Host thread polls its guest's fd and a
// task queue. start() from the test thread runs as a task on a host thread, so the exchange is
// started inline there (the path keywayd's requests take); start() from an observer (inside the
// guest's loop) goes through the mailbox. The destructor stops the hosts first, then the client,
// in keywayd's order (listeners stop before the upstream client goes).
template <class Client, class Options>
class HostedClient final : public core::UpstreamClient {
 public:
  explicit HostedClient(Options options = {}) {
    options.hosted = true;
    inner_ = std::make_unique<Client>(options);
    for (auto& guest : inner_->guests()) hosts_.push_back(std::make_unique<Host>(guest));
    REQUIRE(hosts_.size() == std::max(1u, options.io_threads));
  }
  ~HostedClient() override {
    stopped_.store(true);
    for (auto& host : hosts_) host->stop();
    // inner_ goes with the members; not reset(): an observer completing during its destructor
    // may still call start() on this wrapper, which needs inner_.
  }

  std::shared_ptr<core::UpstreamCall> start(UpstreamRequest request,
                                            std::shared_ptr<core::UpstreamObserver> observer) override {
    if (Host::onHostThread() || stopped_.load()) return inner_->start(std::move(request), std::move(observer));
    Host& host = *hosts_[next_.fetch_add(1) % hosts_.size()];
    return host.call([&] { return inner_->start(std::move(request), std::move(observer)); });
  }
  auto stats() const { return inner_->stats(); }
  bool probeIoThreads(std::chrono::milliseconds deadline) { return inner_->probeIoThreads(deadline); }

 private:
  class Host {
   public:
    explicit Host(std::shared_ptr<ReactorGuest> guest)
        : guest_(std::move(guest)), epoll_fd_(::epoll_create1(EPOLL_CLOEXEC)), task_fd_(::eventfd(0, EFD_NONBLOCK)) {
      REQUIRE(epoll_fd_ >= 0);
      REQUIRE(task_fd_ >= 0);
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = 1;
      REQUIRE(::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, guest_->pollFd(), &ev) == 0);
      ev.data.u64 = 2;
      REQUIRE(::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, task_fd_, &ev) == 0);
      thread_ = std::thread([this] { run(); });
    }
    ~Host() {
      stop();
      ::close(epoll_fd_);
      ::close(task_fd_);
    }
    static bool onHostThread() { return onHost(); }

    std::shared_ptr<core::UpstreamCall> call(const std::function<std::shared_ptr<core::UpstreamCall>()>& fn) {
      auto task = std::make_shared<std::packaged_task<std::shared_ptr<core::UpstreamCall>()>>(fn);
      auto result = task->get_future();
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stopping_) return fn();
        tasks_.push_back([task] { (*task)(); });
      }
      const uint64_t one = 1;
      REQUIRE(::write(task_fd_, &one, sizeof one) == sizeof one);
      return result.get();
    }

    void stop() {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stopping_) return;
        stopping_ = true;
      }
      const uint64_t one = 1;
      REQUIRE(::write(task_fd_, &one, sizeof one) == sizeof one);
      thread_.join();
      runTasks();  // queued before the stop: run them here
    }

   private:
    void runTasks() {
      std::vector<std::function<void()>> tasks;
      {
        std::lock_guard<std::mutex> lock(mu_);
        tasks.swap(tasks_);
      }
      for (auto& task : tasks) task();
    }
    void run() {
      onHost() = true;
      epoll_event events[2];
      for (;;) {
        guest_->enter();
        const int n = ::epoll_wait(epoll_fd_, events, 2, -1);
        bool guest_ready = false;
        for (int i = 0; i < n; ++i) {
          if (events[i].data.u64 == 1) {
            guest_ready = true;
            continue;
          }
          uint64_t value = 0;
          if (::read(task_fd_, &value, sizeof value) < 0) REQUIRE(errno == EAGAIN);
          runTasks();
          std::lock_guard<std::mutex> lock(mu_);
          if (stopping_) return;
        }
        if (guest_ready) guest_->runReady();
      }
    }

    static bool& onHost() {
      static thread_local bool on_host = false;
      return on_host;
    }
    std::shared_ptr<ReactorGuest> guest_;
    int epoll_fd_;
    int task_fd_;
    std::mutex mu_;
    std::vector<std::function<void()>> tasks_;
    bool stopping_ = false;
    std::thread thread_;
  };

  std::unique_ptr<Client> inner_;
  std::vector<std::unique_ptr<Host>> hosts_;
  std::atomic<size_t> next_{0};
  std::atomic<bool> stopped_{false};
};

}  // namespace keyway::testing
