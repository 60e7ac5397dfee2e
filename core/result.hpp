// Result-style error handling for the request path: no exceptions cross component boundaries.
#pragma once

#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace keyway::core {

// The error codes of docs/errors.md. Each maps to exactly one HTTP status (see errors.hpp).
enum class ErrorCode {
  kUnauthorized,        // 401
  kForbidden,           // 403
  kNotFound,            // 404
  kBadRequest,          // 400
  kPayloadTooLarge,     // 413
  kHeadersTooLarge,     // 431 (request header fields too large)
  kInvalidParameters,   // 422
  kRateLimited,         // 429
  kUpstreamUnreachable, // 502
  kUpstreamTimeout,     // 504
  kUnavailable,         // 503
  kNotImplemented,      // 501 (unsupported transfer coding)
  kInternal,            // 500
};

// One violation or one piece of extra information, e.g. {"pointer": "/owner", "reason": "..."}.
struct ErrorDetail {
  std::string pointer;
  std::string reason;
};

struct Error {
  ErrorCode code = ErrorCode::kInternal;
  std::string message;
  std::vector<ErrorDetail> details;

  static Error make(ErrorCode c, std::string msg) { return Error{c, std::move(msg), {}}; }
};

struct Unit {};

// A value or an Error. Cheap to move; never throws on access misuse in release builds (asserts).
template <class T>
class Result {
 public:
  Result(T value) : v_(std::move(value)) {}          // NOLINT(google-explicit-constructor)
  Result(Error error) : v_(std::move(error)) {}      // NOLINT(google-explicit-constructor)

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &std::get<0>(v_); }
  const T* operator->() const { return &std::get<0>(v_); }
  T& operator*() & { return std::get<0>(v_); }
  const T& operator*() const& { return std::get<0>(v_); }

  const Error& error() const { return std::get<1>(v_); }
  Error&& takeError() { return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, Error> v_;
};

using Status = Result<Unit>;
inline Status okStatus() { return Unit{}; }

}  // namespace keyway::core
