// A Pistache transport factory whose per-thread transports read connections with one recv() per
// readable event where Pistache's own makes two, and also run one ReactorGuest each
// (daemon/reactor_guest.hpp) when given. Pistache types stay in daemon/.
#pragma once

#include <memory>
#include <vector>

#include <pistache/listener.h>
#include <pistache/tcp.h>

#include "daemon/reactor_guest.hpp"

namespace keyway::daemon {

// For Listener::setTransportFactory: reactor thread i runs guests[i] (threads beyond the guests
// run none; guests beyond the threads are never run, so give at most one per thread). With no
// guests, the transports differ from Pistache's only in how they read.
Pistache::Tcp::Listener::TransportFactory guestTransportFactory(std::shared_ptr<Pistache::Tcp::Handler> handler,
                                                                std::vector<std::shared_ptr<ReactorGuest>> guests);

}  // namespace keyway::daemon
