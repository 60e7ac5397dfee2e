// Work that a listener's reactor thread runs on behalf of another component: the upstream
// client's event loops (daemon/curl_upstream_client.hpp), so that a forwarded request, its
// upstream exchange and its response stay on one thread, as in nginx's worker.
#pragma once

namespace keyway::daemon {

// The host (daemon/http_server.cpp) adds pollFd() to its thread's epoll set, level-triggered,
// calls enter() each time that thread is about to handle events, and runReady() whenever
// pollFd() is readable. A guest is hosted by at most one thread at a time.
class ReactorGuest {
 public:
  virtual ~ReactorGuest() = default;
  // Readable whenever runReady() has work (an epoll fd of the guest's own descriptors).
  virtual int pollFd() const = 0;
  // The calling thread is now the hosting thread: work it starts may run inline (no hand-off).
  virtual void enter() = 0;
  // Does the ready work without blocking. Hosting thread only.
  virtual void runReady() = 0;
};

}  // namespace keyway::daemon
