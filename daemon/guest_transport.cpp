// GuestTransport: Pistache's TCP transport that also runs a ReactorGuest on each reactor thread.
// Its own translation unit because instantiating Pistache's Transport here makes GCC 12 warn
// (-Wnull-dereference) inside Pistache's inlined queue destructors, which are not our code.
#pragma GCC diagnostic ignored "-Wnull-dereference"

#include "daemon/guest_transport.hpp"

#include <sys/socket.h>

#include <cerrno>
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
    if (guest_) guest_->enter();
    bool guest_ready = false;
    rest_.clear();
    for (const auto& entry : fds) {
      // FdSet::Entry privately derives from Polling::Event and adds nothing: the C-style cast is
      // the one way to read the event's flags and to copy it (flags included) into a new set.
      const auto& event = (const Pistache::Polling::Event&)entry;
      if (event.tag.value() == kGuestTag) {
        guest_ready = true;
      } else if (!readPeer(event)) {
        rest_.push_back(event);
      }
    }
    // FdSet copies the events, so rest_ keeps its capacity for the next batch.
    if (!rest_.empty()) Pistache::Tcp::Transport::onReady(Pistache::Aio::FdSet(std::move(rest_)));
    if (guest_ready && guest_) guest_->runReady();
  }

  std::shared_ptr<Pistache::Aio::Handler> clone() const override {
    return std::make_shared<GuestTransport>(handler_->clone(), pool_);
  }

 private:
  // Not a descriptor number (those are below 2^31), and Pistache's per-handler bits are zero
  // with one handler per reactor.
  static constexpr uint64_t kGuestTag = 0x004b577947554553ull;

  // Pistache reads a readable connection until recv() says EAGAIN: one extra system call per
  // request, ~1/5 of a forwarded request's calls. A read shorter than the buffer has emptied the
  // socket, and with edge-triggered registration any later bytes raise a new event (nginx stops
  // at a short read the same way). So a plain "readable" event gets one recv() here. Anything
  // else goes to Pistache's own path: an event that also says hang-up, peer shutdown or
  // writable, a full buffer (more may be queued), end of stream or an error (its recv() sees the
  // same end or reset again and closes the peer as it always has), and descriptors that are not
  // connections (its queues and timers). Returns true when the event needs nothing more.
  bool readPeer(const Pistache::Polling::Event& event) {
    if (static_cast<Pistache::Polling::NotifyOn>(event.flags) != Pistache::Polling::NotifyOn::Read) return false;
    const auto fd = static_cast<Pistache::Fd>(event.tag.value());
    auto it = peers.find(fd);
    if (it == peers.end()) return false;
    const ssize_t n = ::recv(fd, buffer_, sizeof buffer_, 0);
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK;
    if (n == 0) return false;
    const std::shared_ptr<Pistache::Tcp::Peer> peer = it->second;  // the map may change in onInput
    handler_->onInput(buffer_, static_cast<size_t>(n), peer);
    return static_cast<size_t>(n) < sizeof buffer_;
  }

  std::shared_ptr<Pistache::Tcp::Handler> handler_;
  std::shared_ptr<Pool> pool_;
  std::shared_ptr<ReactorGuest> guest_;
  std::vector<Pistache::Polling::Event> rest_;
  char buffer_[16384];  // one per reactor thread; a request head fits in one read
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
