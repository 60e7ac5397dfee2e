// Test-only fake upstream on raw sockets (not curl): records requests byte for byte and answers
// each with a script of steps (send, delay, wait for a condition, close, reset, stall).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "core/http_types.hpp"

namespace keyway::testing {

// One request as the server parsed it off the wire.
struct ReceivedRequest {
  std::string head;  // request line and header block, raw, including the final CRLF CRLF
  std::string method;
  std::string target;
  std::string version;
  core::Headers headers;  // in wire order, spelling kept, values with OWS trimmed
  std::string body;       // Content-Length bytes
  int connection = 0;     // accept order of the TCP connection it came on, from 0
};

struct Step {
  enum class Kind { kSend, kDelay, kWaitFor, kClose, kReset, kStall };
  Kind kind = Kind::kSend;
  std::string bytes;                    // kSend
  std::chrono::milliseconds time{0};    // kDelay: how long; kWaitFor: give up after
  std::function<bool()> condition;      // kWaitFor (polled on the server thread)
};
using Script = std::vector<Step>;

Step send(std::string bytes);
Step delay(std::chrono::milliseconds time);
Step waitFor(std::function<bool()> condition, std::chrono::milliseconds give_up_after);
Step closeConnection();  // graceful close once everything before it was sent
Step resetConnection();  // RST (SO_LINGER 0) once everything before it was sent
Step stall();            // never answer; keep the connection open until the server stops

// "HTTP/1.1 <status> <reason>" with the headers and a Content-Length body.
std::string response(int status, std::string_view reason, const core::Headers& headers,
                     std::string_view body);
// A chunk of a chunked body ("" gives the last chunk).
std::string chunk(std::string_view data);

// Listens on 127.0.0.1, port chosen by the kernel; one poll() thread serves every connection.
// Requests on a connection are answered in turn (keep-alive); the script of the previous request
// must finish before the next request is read. Thread-safe accessors.
class RawHttpServer {
 public:
  using Handler = std::function<Script(const ReceivedRequest&)>;
  // on_accept runs on each new connection before any request is read (e.g. a non-HTTP greeting).
  explicit RawHttpServer(Handler handler, Script on_accept = {});
  ~RawHttpServer();
  RawHttpServer(const RawHttpServer&) = delete;
  RawHttpServer& operator=(const RawHttpServer&) = delete;

  uint16_t port() const { return port_; }
  std::string url(std::string_view target) const;
  std::vector<ReceivedRequest> requests() const;
  size_t requestCount() const;
  size_t connectionsAccepted() const { return accepted_.load(); }

 private:
  struct Connection;
  void run();
  void drive(Connection& connection);

  Handler handler_;
  Script on_accept_;
  int listen_fd_ = -1;
  int wake_pipe_[2] = {-1, -1};
  uint16_t port_ = 0;
  std::atomic<size_t> accepted_{0};
  std::atomic<bool> stop_{false};
  mutable std::mutex mutex_;
  std::vector<ReceivedRequest> requests_;
  std::thread thread_;
};

}  // namespace keyway::testing
