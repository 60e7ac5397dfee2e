// GuestTransport: Pistache's TCP transport that also runs a ReactorGuest on each reactor thread.
// Its own translation unit because instantiating Pistache's Transport here makes GCC 12 warn
// (-Wnull-dereference) inside Pistache's inlined queue destructors, which are not our code.
#pragma GCC diagnostic ignored "-Wnull-dereference"

#include "daemon/guest_transport.hpp"

#include <mutex>
#include <utility>
#include <vector>

#include <pistache/reactor.h>
#include <pistache/transport.h>

namespace keyway::daemon {

namespace {

// Pistache's transport with one ReactorGuest per reactor thread (the native upstream client's
// loops): the guest's epoll fd joins the reactor's epoll set, and its events are handled on the
// reactor thread right after the connections'. A forwarded request then starts its upstream
// exchange inline and its response is written from the same thread: no hand-off, no wake-up of
// another thread. Pistache 0.0.5 has one handler (this transport) per reactor thread, so the
// reactor passes every event here with its tag as registered.
class GuestTransport final : public Pistache::Tcp::Transport {
 public:
  // Hands out the guests, one per reactor thread, as Pistache registers the per-thread clones.
  struct Pool {
    std::mutex mu;
    std::vector<std::shared_ptr<ReactorGuest>> guests;
    size_t next = 0;
    std::shared_ptr<ReactorGuest> take() {
      std::lock_guard<std::mutex> lock(mu);
      return next < guests.size() ? guests[next++] : nullptr;
    }
  };

  GuestTransport(const std::shared_ptr<Pistache::Tcp::Handler>& handler, std::shared_ptr<Pool> pool)
      : Pistache::Tcp::Transport(handler), handler_(handler), pool_(std::move(pool)) {}
  ~GuestTransport() override;

  void registerPoller(Pistache::Polling::Epoll& poller) override {
    Pistache::Tcp::Transport::registerPoller(poller);
    guest_ = pool_->take();
    if (guest_) {
      poller.addFd(guest_->pollFd(), Pistache::Flags<Pistache::Polling::NotifyOn>(Pistache::Polling::NotifyOn::Read),
                   Pistache::Polling::Tag(kGuestTag), Pistache::Polling::Mode::Level);
    }
  }

  void onReady(const Pistache::Aio::FdSet& fds) override {
    if (!guest_) {
      Pistache::Tcp::Transport::onReady(fds);
      return;
    }
    guest_->enter();
    bool guest_ready = false;
    for (const auto& entry : fds) guest_ready = guest_ready || entry.getTag().value() == kGuestTag;
    if (!guest_ready) {
      Pistache::Tcp::Transport::onReady(fds);
      return;
    }
    if (fds.size() > 1) {
      std::vector<Pistache::Polling::Event> rest;
      rest.reserve(fds.size() - 1);
      for (const auto& entry : fds) {
        // FdSet::Entry privately derives from Polling::Event and adds nothing: the C-style cast
        // is the one way to copy the event (flags included) into a new set.
        if (entry.getTag().value() != kGuestTag) rest.push_back((const Pistache::Polling::Event&)entry);
      }
      Pistache::Tcp::Transport::onReady(Pistache::Aio::FdSet(std::move(rest)));
    }
    guest_->runReady();
  }

  std::shared_ptr<Pistache::Aio::Handler> clone() const override {
    return std::make_shared<GuestTransport>(handler_->clone(), pool_);
  }

 private:
  // Not a descriptor number (those are below 2^31), and Pistache's per-handler bits are zero
  // with one handler per reactor.
  static constexpr uint64_t kGuestTag = 0x004b577947554553ull;

  std::shared_ptr<Pistache::Tcp::Handler> handler_;
  std::shared_ptr<Pool> pool_;
  std::shared_ptr<ReactorGuest> guest_;
};
GuestTransport::~GuestTransport() = default;

}  // namespace

Pistache::Tcp::Listener::TransportFactory guestTransportFactory(std::shared_ptr<Pistache::Tcp::Handler> handler,
                                                                std::vector<std::shared_ptr<ReactorGuest>> guests) {
  auto pool = std::make_shared<GuestTransport::Pool>();
  pool->guests = std::move(guests);
  return [handler = std::move(handler), pool] { return std::make_shared<GuestTransport>(handler, pool); };
}

}  // namespace keyway::daemon
