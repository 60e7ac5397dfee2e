// The role interface for sending requests upstream asynchronously (implemented in daemon/ with
// libcurl's multi interface; faked in tests).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "core/http_types.hpp"
#include "core/upstream_tls.hpp"

namespace keyway::core {

struct UpstreamRequest {
  std::string method;
  std::string url;   // absolute: base_url + raw rest of the target, never re-encoded
  Headers headers;   // exactly what goes on the wire (hop-by-hop already removed, creds injected)
  std::string body;
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds total_timeout{60000};  // whole exchange; 0 = none (streams)
  // If set, a response is allowed to stream: onBody may be called many times and the total
  // size is not limited by max_response_bytes.
  bool allow_streaming = false;
  size_t max_response_bytes = 64u << 20;
  // The connection pool the exchange uses (keywayd: the upstream's name) and how many upstream
  // connections that pool may hold at once (0 = no limit); requests beyond it wait for a
  // connection instead of opening one.
  std::string pool;
  size_t max_connections = 0;
  // The upstream's TLS settings (https:// only); null = the system's CAs, no client certificate.
  // Verification is always on whatever this says.
  std::shared_ptr<const UpstreamTls> tls;
};

// How an exchange ended. Everything but kNone is a failure keyway maps to a docs/errors.md error.
enum class UpstreamFailure {
  kNone,
  kConnectFailed,     // DNS, refused, unreachable: the request never left
  kTimeout,           // connect or total timeout
  kSendFailed,        // connection failed after (part of) the request was sent, or reset mid-response
  kTls,               // handshake / certificate failure
  kProtocol,          // garbage instead of HTTP, response cut short
  kResponseTooLarge,  // exceeded max_response_bytes
  kCancelled,         // cancel() was called
};

struct UpstreamOutcome {
  UpstreamFailure failure = UpstreamFailure::kNone;
  std::string message;  // for logs; never contains header values nor certificate contents
  bool headers_received = false;
  bool connection_reused = false;
  std::chrono::microseconds elapsed{0};
  TlsProblem tls_problem = TlsProblem::kHandshake;  // why, when failure == kTls
};

// Receives the events of one exchange. All calls happen on the client's own I/O thread, in order:
// onHeaders at most once, then onBody zero or more times, then onComplete exactly once.
class UpstreamObserver {
 public:
  virtual ~UpstreamObserver() = default;
  // Status line and final headers (after any 1xx). `reason` is the upstream's phrase, possibly
  // empty (HTTP/2). Headers come as received except Content-Length and Transfer-Encoding, which
  // are removed (the body is delivered de-chunked, NOT decompressed); the gateway applies the
  // hop-by-hop rules.
  virtual void onHeaders(int status, std::string_view reason, Headers headers) = 0;
  // Return false to ask the client to pause this transfer until UpstreamCall::resume().
  virtual bool onBody(std::string_view chunk) = 0;
  virtual void onComplete(const UpstreamOutcome& outcome) = 0;
};

// Handle to an exchange in flight. Thread-safe; may outlive the exchange (then a no-op).
class UpstreamCall {
 public:
  virtual ~UpstreamCall() = default;
  virtual void cancel() = 0;  // onComplete(kCancelled) follows unless already completed
  virtual void resume() = 0;  // undo a pause requested by onBody returning false
};

class UpstreamClient {
 public:
  virtual ~UpstreamClient() = default;
  // Starts the exchange; never blocks on I/O; thread-safe. The observer is kept alive until
  // onComplete has returned.
  virtual std::shared_ptr<UpstreamCall> start(UpstreamRequest request,
                                              std::shared_ptr<UpstreamObserver> observer) = 0;
};

}  // namespace keyway::core
