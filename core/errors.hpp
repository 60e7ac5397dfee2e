// keyway's own error responses (docs/errors.md): code -> status/name, reason phrases, JSON error bodies.
#pragma once

#include <string>
#include <string_view>

#include "core/http_types.hpp"
#include "core/result.hpp"

namespace keyway::core {

// The HTTP status of an error code: 401, 403, 404, 400, 413, 431, 422, 429, 502, 504, 503, 501, 500.
int httpStatus(ErrorCode code);

// The snake_case name used in error bodies ("unauthorized", "payload_too_large", ...). Never null.
const char* errorCodeName(ErrorCode code);

// The standard RFC 9110 reason phrase of a status ("Not Found", "Content Too Large", ...), or ""
// for a status without a registered phrase. The returned view points to static storage.
std::string_view reasonPhrase(int status);

// The JSON body of an error:
//   {"error":{"code":"...","message":"...","details":[{"pointer":"/x","reason":"..."}]}}
// "details" is always present (possibly []). Written with RapidJSON, so every string is escaped
// correctly; invalid UTF-8 in a message or detail is replaced by U+FFFD so the body stays valid
// JSON. The caller is responsible for keeping secrets out of `e` (this function does not filter).
std::string errorBody(const Error& e);

// A complete response for `e`: status httpStatus(e.code), its standard reason phrase,
// `Content-Type: application/json` and errorBody(e) as body. Framing headers are the server's job.
HttpResponse errorResponse(const Error& e);

}  // namespace keyway::core
