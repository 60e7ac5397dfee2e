// A Pistache transport factory whose per-thread transports also run one ReactorGuest each
// (daemon/reactor_guest.hpp). Pistache types stay in daemon/.
#pragma once

#include <memory>
#include <vector>

#include <pistache/listener.h>
#include <pistache/tcp.h>

#include "daemon/reactor_guest.hpp"

namespace keyway::daemon {

// For Listener::setTransportFactory: reactor thread i runs guests[i] (threads beyond the guests
// run none; guests beyond the threads are never run, so give at most one per thread).
Pistache::Tcp::Listener::TransportFactory guestTransportFactory(std::shared_ptr<Pistache::Tcp::Handler> handler,
                                                                std::vector<std::shared_ptr<ReactorGuest>> guests);

}  // namespace keyway::daemon
